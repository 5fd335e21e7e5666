"""Accuracy budget: a recipe's `target:` block finds the fastest student that keeps it.

The teacher stage runs once (`<search>/teacher-<hash>`); its ONNX export is the reference every
trial is judged against and the peer (Optimum's dynamic INT8 of it) is what every trial is timed
beside, interleaved, so a busy machine slows both and the ratio stays honest. The student
shapes of `target.shapes` are then tried in an Optuna multi-objective study (validation metric
up, the objective down) in two rungs of successive halving: every shape trains
`screen.epochs`, and the `screen.keep` fastest that come within `max_drop + slack` train in
full. Both rungs live in the search's RDB storage, so a killed search continues where it
stopped, and a crashed trial is run again (`compress.engine.search`). Every folder and study is
named by a hash of what its results depend on (`trained_as`), so a rerun reuses exactly the
work that still holds: another `max_drop` reuses the teacher and the screen, while a changed
student stage or data trains new rungs instead of reporting the old trials as the new recipe's.

The choice is the full-rung trial with the best objective whose validation drop is within
`max_drop` (and whose latency and size keep their limits). Only then is the test split used:
the chosen file, its no-teacher twin (the same shape on hard labels), the teacher and the peer
are benched once, with paired intervals (`compress.engine.budget_report`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from bench.files import write_json_atomic
from bench.metrics import classification_metrics
from bench.options import BenchOptions
from bench.paired import paired_difference
from bench.runner import run_benchmark
from bench.runtime import open_model
from bench.schema import BenchReport
from compress.data.splits import Split
from compress.data.task_data import load_task_data
from compress.engine.budget_choice import choose, promising
from compress.engine.budget_report import write_budget_report
from compress.engine.recipe import apply_overrides, parse_recipe
from compress.engine.search import TrialRun, drive, last_runs, open_study, run_error
from compress.engine.shapes import stage_names, trial_recipe, without_teacher
from compress.errors import EdgebertError
from export.onnx_export import export_onnx
from export.quantize import optimum_dynamic_int8

SHIPPED_VARIANTS = ("qat_int8", "dynamic_int8", "static_int8", "fp32")  # first found ships
DIRECTIONS = ("maximize", "minimize")  # validation metric, objective
TWINS = ("chosen", "no-teacher twin")


@dataclass
class Reference:
    """The teacher trained once, its ONNX file, the peer, and its predictions."""

    model: Path
    onnx: Path
    peer: Path
    validation: Split
    test: Split
    classes: int
    predictions: dict[str, list[int]]  # split -> the teacher's labels
    score: float  # the teacher's validation metric (ONNX Runtime, as trials are scored)


@dataclass
class Budget:
    """One budget search: where it writes, what it reads, how a trial is run."""

    path: Path
    raw: dict
    recipe: object
    root: Path
    run_trial: Callable

    @property
    def target(self):
        return self.recipe.target

    @property
    def metric(self) -> str:
        return self.recipe.search.metric

    def parse(self, raw: dict):
        text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
        return parse_recipe(text, str(self.path), [], base_dir=self.path.parent)

    def training_recipe(self) -> dict:
        """The raw recipe without its `search` and `target` blocks: what the runs train."""
        return {k: v for k, v in self.raw.items() if k not in ("search", "target")}

    def teacher_recipe(self) -> dict:
        """The raw recipe up to and including the teacher stage (search and target left out)."""
        raw = self.training_recipe()
        raw["stages"] = raw["stages"][: stage_names(raw).index(self.target.teacher) + 1]
        return raw

    def trained_as(self) -> dict:
        """What every trial's numbers depend on besides its shape: the recipe's data, seed and
        stages, the metric it is scored in and how it is timed (the budget's bounds, the screen's
        `keep` and `slack` are read only when choosing, so changing them reuses the trials)."""
        t = self.target
        return {
            "recipe": self.training_recipe(),
            "metric": self.metric,
            "timed": [t.seq_length, t.latency_batch, t.objective],
        }


def run_budget(path: Path, overrides: list[str], out_base: Path, run_trial) -> Path:
    """Teacher once, the two rungs, the choice, the proof; returns the search directory.
    `run_trial(recipe, folder, **run_recipe_options)` runs one recipe into `folder`, continuing
    the run directory it finds there."""
    text = path.read_text(encoding="utf-8")
    recipe = parse_recipe(text, str(path), overrides, base_dir=path.parent)
    raw = apply_overrides(yaml.safe_load(text), overrides)
    name = recipe.search.study or recipe.name
    budget = Budget(path, raw, recipe, out_base / f"{name}-budget", run_trial)
    budget.root.mkdir(parents=True, exist_ok=True)
    reference = make_reference(budget)
    screened = _screen(budget, reference, name)
    full = _full_rung(budget, reference, name, screened)
    promoted = [row["params"] for row in full]
    rows = [row | {"rung": "screen", "promoted": row["params"] in promoted} for row in screened]
    rows += [row | {"rung": "full"} for row in full]
    chosen = choose(full, budget.target)
    proof = (
        (saved_proof(budget.root, chosen) or prove(budget, reference, chosen)) if chosen else None
    )
    write_budget_report(budget.root, budget.target, budget.metric, reference.score, rows, proof)
    if chosen is None:
        raise EdgebertError(
            f"target: no trial kept max_drop {budget.target.max_drop} and the limits; see "
            f"{budget.root / 'budget.md'}"
        )
    return budget.root


def run_once(budget: Budget, recipe, folder: Path, **options) -> Path:
    """Run `recipe` into `folder` unless it already completed there; a run stopped half-way
    is resumed."""
    state = folder / "state.json"
    if state.is_file():
        done = json.loads(state.read_text(encoding="utf-8"))["completed_stages"]
        if done >= len(recipe.stages):
            return folder
    budget.run_trial(recipe, folder, **options)
    return folder


def make_reference(budget: Budget) -> Reference:
    """Train the teacher once (resumable), export it and its peer once, keep its predictions."""
    raw = budget.teacher_recipe()
    key = digest(raw)  # a changed teacher stage or data trains a teacher of its own
    folder = run_once(budget, budget.parse(raw), budget.root / f"teacher-{key}")
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    model = folder / state["models"][budget.target.teacher]
    out = budget.root / f"reference-{key}"
    if not (out / "model_quantized.onnx").is_file():
        export_onnx(model, out)
        optimum_dynamic_int8(out, out)
    data = load_task_data(budget.recipe.data, budget.recipe.seed, budget.recipe.task)
    if data.test is None:
        raise EdgebertError("target: the data has no test split to prove the chosen file on")
    predictions = _cached_predictions(out / "model.onnx", data, out / "predictions.json")
    classes = len(data.label_names)
    score = classification_metrics(
        data.validation.labels, predictions["validation"], data.label_names
    )
    return Reference(
        model=model,
        onnx=out / "model.onnx",
        peer=out / "model_quantized.onnx",
        validation=data.validation,
        test=data.test,
        classes=classes,
        predictions=predictions,
        score=score[budget.metric],
    )


def _cached_predictions(onnx: Path, data, cache: Path) -> dict[str, list[int]]:
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    runner = open_model(onnx)
    predictions = {
        split: runner.logits(data.split(split).texts).argmax(-1).tolist()
        for split in ("validation", "test")
    }
    write_json_atomic(cache, predictions)
    return predictions


# --- the two rungs ------------------------------------------------------------------------------


def shape_space(shapes) -> dict[str, list]:
    """The shapes as Optuna categoricals (layer sets as text: choices must be scalars). The
    width enters the space only when the recipe searches it, so a search without it keeps its
    studies and folders."""
    space = {
        "keep_layers": [",".join(map(str, layers)) for layers in shapes.keep_layers],
        "prune": list(shapes.prune),
        "min_count": list(shapes.min_count),
        "qat": list(shapes.qat),
    }
    return space | ({"hidden": list(shapes.hidden)} if shapes.hidden is not None else {})


def as_shape(params: dict) -> dict:
    return params | {"keep_layers": [int(x) for x in str(params["keep_layers"]).split(",")]}


def rung_shape(params: dict, screen) -> dict:
    """The shape a rung trains: a screening rung leaves QAT to the full rung unless its
    `screen.qat` asks for it."""
    shape = as_shape(params)
    if screen is not None and not screen.qat:
        shape["qat"] = False
    return shape


def _rung(budget: Budget, reference: Reference, study_name: str, screen, points, total) -> list:
    """Run one rung's trials (or join the workers running them); its rows, in trial order.
    `screen` (a ScreenConfig) makes it the short rung: its epochs, its training rows."""
    config = budget.recipe.search
    study = open_study(config, budget.recipe.seed, study_name, budget.root, DIRECTIONS, points)
    target = budget.target

    def build(params: dict):
        raw = trial_recipe(
            budget.raw,
            target.teacher,
            reference.model,
            target.student,
            rung_shape(params, screen),
            screen.epochs if screen else None,
            screen.max_train_rows if screen else None,
            screen.transfer if screen else True,
        )
        return budget.parse(raw)

    def measure(trial: optuna.Trial, run_dir: Path) -> tuple[float, float]:
        row = measure_file(shipped_file(run_dir), reference, target, budget.metric)
        for key, value in row.items():
            trial.set_user_attr(key, value)
        return row["score"], row["objective"]

    def run_trial(recipe, folder: Path) -> None:
        budget.run_trial(recipe, folder, cache_dir=budget.root / "cache")

    folder, seed = budget.root / study_name, budget.recipe.seed
    space = shape_space(target.shapes)
    trial_run = TrialRun(folder, config, seed, total, build, run_trial, measure, space=space)
    drive(study, trial_run, lambda: None)
    return trial_rows(study)


def _screen(budget: Budget, reference: Reference, name: str) -> list[dict]:
    screen = budget.target.screen
    if screen is None:
        return []
    total, points = _plan(budget)
    trains = screen.model_dump(include={"epochs", "max_train_rows", "qat", "transfer"})
    key = digest([budget.trained_as(), trains, points])
    return _rung(budget, reference, f"{name}-screen-{key}", screen, points, total)


def _full_rung(budget: Budget, reference: Reference, name: str, screened: list[dict]) -> list:
    """The kept shapes in full (or, with no screen, the search's own trials)."""
    screen = budget.target.screen
    if screen is None:
        total, points = _plan(budget)
    else:
        points = promising(screened, budget.target.max_drop + screen.slack, screen.keep)
        total = len(points)
    key = digest([budget.trained_as(), points])
    return _rung(budget, reference, f"{name}-full-{key}", None, points, total)


def digest(value) -> str:
    """A short name for what a folder's results depend on (a set of shapes, a recipe): a rerun
    with another `max_drop` or `screen.keep` that promotes other shapes gets its own full rung
    (and twin) and reuses the teacher and the screen; the same shapes find their finished
    trials."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _plan(budget: Budget) -> tuple[int, list[dict] | None]:
    """How many trials a sampling rung runs, and its points when the method is a grid."""
    config = budget.recipe.search
    if config.method != "grid":
        return config.trials, None
    space = shape_space(budget.target.shapes)
    keys = list(space)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    return min(config.trials, len(grid)), grid[: config.trials]


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial slot: its last finished run, with what `measure_file` found."""
    rows = []
    for slot, t in last_runs(study):
        row = {"trial": slot, "params": dict(t.params), **t.user_attrs}
        if t.state == optuna.trial.TrialState.COMPLETE:
            row.pop("error", None)  # None: cleared at the run's start
        else:
            row = {k: v for k, v in row.items() if k not in ("score", "drop", "objective")}
            row["error"] = run_error(t)
        rows.append(row)
    return rows


# --- one trial's file -----------------------------------------------------------------------------


def shipped_file(run_dir: Path) -> Path:
    """The file a trial ships: its QAT graph, else the export's INT8, else fp32."""
    state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    files = {
        variant: run_dir / path
        for per_stage in state["artifacts"].values()
        for variant, path in per_stage.items()
    }
    for variant in SHIPPED_VARIANTS:
        if variant in files:
            return files[variant]
    raise EdgebertError(f"target: trial {run_dir.name} exported no ONNX file (add an export stage)")


def measure_file(file: Path, reference: Reference, target, metric: str) -> dict:
    """Score `file` on validation and time it beside the peer (interleaved) at batch 1, 32
    and the latency limit's batch, at the target's sequence length."""
    batches = sorted({1, 32, target.latency_batch})
    options = BenchOptions(
        batch_sizes=batches,
        seq_lengths=[target.seq_length],
        baseline="peer",
        min_seconds=target.timing_seconds,
        traffic_batch_size=None,
    )
    split = reference.validation
    report = run_benchmark(
        {"student": file, "peer": reference.peer},
        split.texts,
        split.labels,
        dataset="validation",
        options=options,
        progress_log=lambda line: None,
    )
    student = next(m for m in report.models if m.name == "student")
    latency = {lat.batch_size: lat for lat in student.latency}
    score = float(getattr(student.accuracy, metric))
    row = {
        "score": score,
        "drop": round(100 * (reference.score - score), 3),
        "size_mb": round(student.size_bytes / 1e6, 3),
        "file": str(file),
    }
    for batch in batches:
        row[f"b{batch}_ms"] = round(latency[batch].p50_ms, 3)
        row[f"b{batch}_x_peer"] = round(latency[batch].ratio_to_baseline_p50 or 0.0, 3)
    row["objective"] = objective_value(row, target.objective)
    return row


def objective_value(row: dict, objective: str) -> float:
    """Lower is better: latency relative to the peer timed beside it (robust to a busy
    machine), or size in MB."""
    if objective == "size":
        return row["size_mb"]
    batch = 1 if objective == "latency_b1" else 32
    return round(1.0 / row[f"b{batch}_x_peer"], 4) if row[f"b{batch}_x_peer"] else float("inf")


# --- proof ----------------------------------------------------------------------------------------


def prove(budget: Budget, reference: Reference, chosen: dict) -> dict:
    """The chosen file's paired validation interval against the teacher; its no-teacher twin;
    then one interleaved bench on the test split of chosen, twin, teacher and peer."""
    file = Path(chosen["file"])
    chosen_val = open_model(file).logits(reference.validation.texts).argmax(-1)
    validation = paired_difference(
        reference.validation.labels,
        reference.predictions["validation"],
        chosen_val,
        reference.classes,
    )
    twin = _twin(budget, reference, chosen)
    models = {"chosen": file, "no-teacher twin": twin, "teacher": reference.onnx}
    models["peer"] = reference.peer
    options = BenchOptions(seq_lengths=[budget.target.seq_length], baseline="peer")
    split = reference.test
    report = run_benchmark(
        models,
        split.texts,
        split.labels,
        dataset="test",
        options=options,
        teacher_predictions=reference.predictions["test"],
    )
    results = {model.name: model for model in report.models}
    vs_teacher = {row.stage: row.vs_teacher for row in report.stages if row.step == "file"}
    # The bench pairs every file with the teacher and the peer; chosen - twin is the one
    # pair it does not make.
    labels = {name: open_model(models[name]).logits(split.texts).argmax(-1) for name in TWINS}
    paired = {
        "chosen - teacher": vs_teacher["chosen"].model_dump(),
        "chosen - peer": results["chosen"].accuracy.vs_baseline.model_dump(),
        "chosen - no-teacher twin": paired_difference(
            split.labels, labels["no-teacher twin"], labels["chosen"], reference.classes
        ),
    }
    return {
        "chosen": chosen,
        "validation_vs_teacher": validation,
        "report": report,
        "paired": paired,
        "test_scores": {name: model.accuracy.model_dump() for name, model in results.items()},
    }


def saved_proof(root: Path, chosen: dict) -> dict | None:
    """The proof a finished search already wrote for this same choice (a rerun of a finished
    search rewrites its report without benching the test split again)."""
    saved, bench = root / "budget.json", root / "proof" / "report.json"
    if not (saved.is_file() and bench.is_file()):
        return None
    data = json.loads(saved.read_text(encoding="utf-8"))
    if data.get("chosen") != chosen or "proof" not in data:
        return None
    proof = {k: v for k, v in data["proof"].items() if k != "reports"}
    return proof | {"report": BenchReport.model_validate_json(bench.read_text(encoding="utf-8"))}


def _twin(budget: Budget, reference: Reference, chosen: dict) -> Path:
    """The chosen shape trained again on hard labels only, as long (same epochs, same rows:
    `without_teacher`)."""
    target = budget.target
    raw = trial_recipe(
        budget.raw,
        target.teacher,
        reference.model,
        target.student,
        as_shape(chosen["params"]),
        None,
    )
    folder = budget.root / f"twin-{digest([budget.trained_as(), chosen['params']])}"
    folder = run_once(budget, budget.parse(without_teacher(raw, target.student)), folder)
    return shipped_file(folder)

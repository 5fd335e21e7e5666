"""Hyperparameter search: a recipe's `search:` block runs the recipe as N trials.

Each trial is the same recipe with some fields overridden (the dotted paths `--set` uses, e.g.
`stages.1.training.lr`), run into its own sub-run directory; Optuna proposes the values (grid,
random or TPE) and gets the validation metric of the chosen stage back. The search directory
ends with a summary (JSON and Markdown), a plot of every trial, and `best.yaml`: the recipe
with the best values written in, ready for `edgebert run`.

The trials live in an Optuna study in RDB storage (`search.storage`; a SQLite file in the
search folder by default), so a search scales out on Optuna's own engine: every `edgebert run`
of the recipe that names the same storage and study is a worker that takes the next trial,
until `trials` have run; a search stopped half-way continues the same way. Trial numbers come
from the storage, so each trial is run and recorded once, whichever worker ran it.

A worker can die without a word (kill -9, a lost machine). Each trial it runs beats a heartbeat
into the storage (Optuna's, through `study.optimize`); a trial silent past `grace_seconds` is
failed by the next worker and queued again with the same values by Optuna's
`RetryHeartbeatStaleTrialCallback`, at most `retries` times. A trial stopped by Ctrl-C or
SIGTERM is queued again the same way, however often it was stopped (stops are not crashes), so
a restarted search runs it instead of losing it. A re-run counts as the trial it repeats (its
`slot`), in the totals and in the summary.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from optuna.exceptions import ExperimentalWarning

from bench.files import first_line, write_json_atomic, write_text_atomic
from compress.engine.catalog import STAGES
from compress.engine.config import Range, SearchConfig
from compress.engine.recipe import apply_overrides, parse_recipe
from compress.errors import EdgebertError, RunInterrupted


def _sample(trial, key: str, values):
    if isinstance(values, Range):
        if values.integer:
            return trial.suggest_int(key, int(values.low), int(values.high), log=values.log)
        return trial.suggest_float(key, values.low, values.high, log=values.log)
    return trial.suggest_categorical(key, values)


def open_study(
    config: SearchConfig,
    seed: int,
    name: str,
    root: Path,
    directions: tuple[str, ...] = ("maximize",),
    points: list[dict] | None = None,
) -> optuna.Study:
    """The shared Optuna study. The database lets exactly one worker create it; that worker
    enqueues `points` (a grid, or a budget search's kept shapes) one by one (Optuna's
    GridSampler stops the study from inside its callback, which the ask/tell loop here does not
    allow), and the others wait until every point is queued, so no point is queued twice and
    none is proposed at random."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are in the summary
    url = config.storage or f"sqlite:///{(root / 'study.db').resolve()}"
    wait = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    sampler = _sampler(config.method, seed)
    storage = _open_storage(url, wait, config)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=list(directions), sampler=sampler
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
    if points is None and config.method == "grid":
        keys = list(config.space)
        grid = itertools.product(*(config.space[k] for k in keys))  # type: ignore[misc]
        points = [dict(zip(keys, point)) for point in grid]
    if points is not None:
        if created:
            for point in points:
                study.enqueue_trial(point)
        else:
            _wait_for_queue(study, len(points))
    return study


def _open_storage(url: str, engine_kwargs: dict, config: SearchConfig, attempts: int = 5):
    """Optuna's RDB storage, with heartbeats (module docstring). Workers that start together
    on a fresh database race to create its schema, and the loser gets a unique-constraint error
    (seen in CI on alembic_version); by the next attempt the schema is there. A bad URL fails
    the same way every time, then stops."""
    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeats: stable since 2.9
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=config.heartbeat_seconds,
                grace_period=config.grace_seconds,
                heartbeat_stale_trial_callback=Requeue(config.retries),
            )
        except Exception as exc:  # noqa: BLE001 - a bad URL, an unreachable database, a race
            if attempt == attempts - 1:
                raise EdgebertError(
                    f"search.storage: cannot open {url}: {first_line(exc)}"
                ) from None
            time.sleep(0.5 * (attempt + 1))


STOPPED = "stopped: interrupted"  # the error of a run the user stopped (Ctrl-C, SIGTERM)


class Requeue(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's re-queue of a failed trial with its values, where the limit counts crashes
    only: stopping a long search and continuing it later is normal use, so a run the user
    stopped never uses up `search.retries`; a run that raised, or whose worker died without a
    word (no error recorded), does."""

    def __init__(self, crash_retries: int) -> None:
        super().__init__(max_retry=None)
        self.crash_retries = crash_retries

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        runs = study.get_trials(deepcopy=False)
        series = [*trial.system_attrs.get("retry_history", []), trial.number]
        crashes = sum(runs[number].user_attrs.get("error") != STOPPED for number in series)
        if crashes <= self.crash_retries:
            super().__call__(study, trial)


def run_error(trial: optuna.trial.FrozenTrial) -> str:
    """What a failed run's row says: its recorded error, or "failed" where none was recorded
    (its worker died; a run clears the error it inherits when it starts)."""
    return trial.user_attrs.get("error") or "failed"


def _slot(trial: optuna.trial.FrozenTrial) -> int:
    """The trial a re-run repeats (its own number for a first run)."""
    return trial.system_attrs.get("failed_trial", trial.number)


def _is_retry(trial: optuna.trial.FrozenTrial) -> bool:
    return "failed_trial" in trial.system_attrs


def _wait_for_queue(study: optuna.Study, size: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while len(study.get_trials(deepcopy=False)) < size:
        if time.monotonic() > deadline:
            raise EdgebertError(
                f"search: study '{study.study_name}' has fewer than its {size} grid points "
                "queued; the worker that created it stopped early: name a new search.study"
            )
        time.sleep(0.2)


def _sampler(method: str, seed: int) -> optuna.samplers.BaseSampler:
    """A sampler for one trial, seeded by the recipe's seed plus the trial number: values are
    drawn when the trial asks for them, so trial N gets the same proposal whichever worker runs
    it (workers with one shared seed would otherwise all propose the same values)."""
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _score(metrics: dict, stage: str, metric: str) -> float:
    try:
        return float(metrics[stage]["validation"][metric])
    except (KeyError, TypeError):
        raise EdgebertError(
            f"search.stage: stage '{stage}' reported no validation {metric}"
        ) from None


def _trained_stage(recipe) -> str:
    names = [s.name or s.type for s in recipe.stages if STAGES[s.type].trains]
    if not names:
        raise EdgebertError("search: the recipe has no training stage to score")
    return names[-1]


def run_search(path: Path, overrides: list[str], out_base: Path, run_trial) -> Path:
    """Run every trial with `run_trial(recipe, run_dir)`; returns the search directory."""
    text = path.read_text(encoding="utf-8")
    base = parse_recipe(text, str(path), overrides, base_dir=path.parent)
    config = base.search
    stage = config.stage or _trained_stage(base)
    if stage not in [s.name or s.type for s in base.stages]:
        raise EdgebertError(f"search.stage: no stage named '{stage}' in the recipe")
    for key, values in config.space.items():  # every path must lead to a valid recipe
        probe = values.low if isinstance(values, Range) else values[0]
        try:
            parse_recipe(text, str(path), [*overrides, *_sets({key: probe})], base_dir=path.parent)
        except EdgebertError as exc:
            raise EdgebertError(f"search.space.{key}: {str(exc).split(': ', 1)[-1]}") from None
    name = config.study or base.name
    root = out_base / f"{name}-search"
    root.mkdir(parents=True, exist_ok=True)
    study = open_study(config, base.seed, name, root)
    total = min(config.trials, _grid_size(config)) if config.method == "grid" else config.trials

    def build(params: dict):
        return parse_recipe(text, str(path), [*overrides, *_sets(params)], base_dir=path.parent)

    def measure(trial: optuna.Trial, run_dir: Path) -> float:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        return _score(metrics, stage, config.metric)

    trial_run = TrialRun(root / "trials", config, base.seed, total, build, run_trial, measure)
    drive(
        study, trial_run, lambda: _write_summary(root, config, stage, _rows(study, config.metric))
    )
    rows = _rows(study, config.metric)
    scored = [r for r in rows if config.metric in r]
    if not scored:
        _write_summary(root, config, stage, rows)
        raise EdgebertError(f"search: every trial failed; see {root}/summary.json")
    best = max(scored, key=lambda r: r[config.metric])
    raw = apply_overrides(yaml.safe_load(text), [*overrides, *_sets(best["params"])])
    raw.pop("search", None)
    for field in ("train", "validation", "test", "labels"):  # best.yaml lives elsewhere
        value = getattr(base.data, field)
        if isinstance(value, Path) and isinstance(raw.get("data", {}).get(field), str):
            raw["data"][field] = str(value)
    raw["name"] = f"{raw['name']}-best"
    write_text_atomic(root / "best.yaml", yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    _write_summary(root, config, stage, rows, best)
    return root


def drive(study: optuna.Study, trial_run: TrialRun, after_trial: Callable[[], None]) -> None:
    """Run trials until the study has `trial_run.total` of them, re-running crashed ones and
    waiting for other workers' running trials (they may die and need a re-run here too)."""
    config = trial_run.config
    while True:
        if _started(study) < trial_run.total or _retries_waiting(study):
            _run_one_trial(study, trial_run, config)
            after_trial()
        elif _running(study):
            time.sleep(config.heartbeat_seconds)
            optuna.storages.fail_stale_trials(study)
        else:
            break


@dataclass
class TrialRun:
    """Runs one trial into `folder/trial-NNN` and reports it to the study: `build` turns the
    trial's values into a recipe, `run_trial` runs it, `measure` reads the run back into the
    study's objective value(s). What the summary needs (run directory, wall time, error) is kept
    on the trial itself, so any worker can write the summary of all of them."""

    folder: Path
    config: SearchConfig
    seed: int
    total: int
    build: Callable[[dict], object]
    run_trial: Callable
    measure: Callable[[optuna.Trial, Path], float | tuple[float, ...]]
    space: dict | None = None  # what trials draw (default: config.space)
    current: int | None = None  # the number of the trial this worker is running

    def objective(self, study: optuna.Study) -> Callable[[optuna.Trial], object]:
        def run(trial: optuna.Trial):
            frozen = study.get_trials(deepcopy=False)[trial.number]
            if not _is_retry(frozen) and _first_runs_before(study, trial.number) >= self.total:
                raise optuna.TrialPruned()  # another worker took the last one meanwhile
            self.current = trial.number
            study.sampler = _sampler(self.config.method, self.seed + _slot(frozen))
            space = self.config.space if self.space is None else self.space
            params = {key: _sample(trial, key, values) for key, values in space.items()}
            value = self(trial, params, _slot(frozen))
            self.current = None
            return value

        return run

    def __call__(self, trial: optuna.Trial, params: dict, slot: int):
        """Run the trial in its slot's folder: a re-run of a stopped or crashed trial continues
        the run it left there (`run_trial` resumes a run directory it finds)."""
        recipe = self.build(params)
        recipe.search = None
        run_dir = self.folder / f"trial-{slot:03d}"
        trial.set_user_attr("error", None)  # not the stopped run's, which a re-run inherits
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        started = time.perf_counter()
        try:
            self.run_trial(recipe, run_dir)
            value = self.measure(trial, run_dir)
        except RunInterrupted:  # stopped, not failed: the search stops with it
            trial.set_user_attr("error", STOPPED)
            raise KeyboardInterrupt from None
        except EdgebertError as exc:  # a trial that fails is recorded, the search goes on
            trial.set_user_attr("error", str(exc))
            self.current = None
            raise
        except BaseException as exc:  # stopped: recorded as failed, queued again by the loop
            trial.set_user_attr("error", f"stopped: {type(exc).__name__}")
            raise
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 1))
        return value


def _first_runs_before(study: optuna.Study, number: int) -> int:
    """First runs (not re-runs) any worker took before trial `number`: its rank in the total."""
    return sum(
        t.number < number and not _is_retry(t) and t.state != optuna.trial.TrialState.WAITING
        for t in study.get_trials(deepcopy=False)
    )


def _started(study: optuna.Study) -> int:
    """Trials any worker has taken (running or finished; a re-run counts as the trial it
    repeats), not those only queued nor the surplus a race pruned."""
    taken = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.PRUNED)
    return len({_slot(t) for t in study.get_trials(deepcopy=False) if t.state not in taken})


def _run_one_trial(study: optuna.Study, trial_run: TrialRun, config: SearchConfig) -> None:
    """One trial through `study.optimize`, which beats its heartbeat and first fails the
    trials of dead workers; a trial stopped here is queued to run again."""
    try:
        study.optimize(trial_run.objective(study), n_trials=1, catch=(EdgebertError,))
    except BaseException as exc:
        if trial_run.current is not None:
            Requeue(config.retries)(study, study.get_trials(deepcopy=False)[trial_run.current])
        if isinstance(exc, KeyboardInterrupt):
            raise RunInterrupted(
                "interrupted; run the same command again: the stopped trial is queued again "
                "and continues where it stopped (after the trials already queued)"
            ) from None
        raise


def _running(study: optuna.Study) -> bool:
    return any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def _retries_waiting(study: optuna.Study) -> bool:
    """Whether a crashed or stopped trial is queued to run again."""
    return any(
        t.state == optuna.trial.TrialState.WAITING and _is_retry(t)
        for t in study.get_trials(deepcopy=False)
    )


def last_runs(study: optuna.Study) -> list[tuple[int, optuna.trial.FrozenTrial]]:
    """(slot, its last finished run) per trial slot, in slot order: a re-run replaces the
    failed or stopped run it repeats."""
    last: dict[int, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL):
            last[_slot(t)] = t
    return sorted(last.items())


def _rows(study: optuna.Study, metric: str) -> list[dict]:
    """One summary row per trial, in trial order: its last finished run."""
    rows = []
    for slot, t in last_runs(study):
        row = {"trial": slot, "params": dict(t.params)}
        if t.state == optuna.trial.TrialState.COMPLETE:
            row[metric] = t.value
            row["wall_seconds"] = t.user_attrs.get("wall_seconds")
        else:
            row["error"] = run_error(t)
        if _is_retry(t):
            row["runs"] = len(t.system_attrs.get("retry_history", [])) + 1
        rows.append(
            row | {"run_dir": t.user_attrs.get("run_dir"), "worker": t.user_attrs.get("worker")}
        )
    return rows


def _literal(value) -> str:
    """A value as `--set` text that YAML reads back as the same type (YAML 1.1 reads `1e-05`,
    without a dot, as a string)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, sep, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if sep and "." not in mantissa else text
    return json.dumps(value)


def _sets(params: dict) -> list[str]:
    return [f"{key}={_literal(value)}" for key, value in params.items()]


def _grid_size(config: SearchConfig) -> int:
    size = 1
    for values in config.space.values():
        size *= len(values)  # type: ignore[arg-type]
    return size


def _write_summary(
    root: Path, config: SearchConfig, stage: str, rows: list[dict], best: dict | None = None
) -> None:
    metric = config.metric
    write_json_atomic(
        root / "summary.json",
        {
            "method": config.method,
            "metric": metric,
            "stage": stage,
            "best": best,
            "trials": rows,
        },
    )
    keys = list(config.space)
    ranked = sorted(rows, key=lambda r: -r.get(metric, float("-inf")))
    lines = [
        f"Search ({config.method}) on validation {metric} of stage '{stage}'",
        "",
        "| rank | trial | " + " | ".join(keys) + f" | {metric} | wall s |",
        "|---:|---:|" + "---|" * len(keys) + "---:|---:|",
    ]
    for rank, row in enumerate(ranked, 1):
        score = f"{row[metric]:.4f}" if metric in row else "failed"
        lines.append(
            f"| {rank} | {row['trial']} | "
            + " | ".join(str(row["params"][k]) for k in keys)
            + f" | {score} | {row.get('wall_seconds', '')} |"
        )
    write_text_atomic(root / "summary.md", "\n".join(lines) + "\n")
    _plot(root / "trials.png", rows, metric)


def _plot(path: Path, rows: list[dict], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if metric in r]
    if not scored:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    xs = [r["trial"] for r in scored]
    ys = [r[metric] for r in scored]
    best_so_far = [max(ys[: i + 1]) for i in range(len(ys))]
    ax.scatter(xs, ys, label="trial", zorder=3)
    ax.step(xs, best_so_far, where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

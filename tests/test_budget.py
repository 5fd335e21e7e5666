"""Accuracy budget: a `target:` block trains the teacher once, screens student shapes, trains
the promising ones in full, chooses the fastest that keeps max_drop and proves it on test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest

from compress.cli import main
from compress.engine.budget import rung_shape, shape_space, trial_rows
from compress.engine.budget_choice import binding, choose, promising
from compress.engine.budget_report import shape_text
from compress.engine.config import ScreenConfig, ShapeSpace, TargetConfig
from compress.engine.shapes import trial_recipe, without_teacher
from tests.conftest import sample_rows, write_jsonl

TARGET = """target:
  max_drop: {max_drop}
  seq_length: 32
  timing_seconds: 0.1
  shapes:
    keep_layers: [[0], [0, 1]]
    prune: [0.0, 0.5]
    qat: [false]
  screen: {{epochs: 1, keep: 2, slack: 100}}
search:
  method: grid
  trials: 4
  metric: accuracy
"""


def budget_recipe(model_dir: Path, data: Path, max_drop: float) -> str:
    return f"""name: tiny-budget
seed: 7
data:
  train: {data / "train.jsonl"}
  validation: {data / "validation.jsonl"}
  test: {data / "test.jsonl"}
  max_length: 32
stages:
  - type: finetune
    name: teacher
    model: {model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1, seed: 1}}
  - type: train
    name: student
    model: "@teacher"
    keep_layers: [0, 1]
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 2, seed: 1}}
    with:
      - distill: {{teacher: "@teacher", temperature: 2.0, alpha: 0.7}}
  - type: export
    quantize: [dynamic]
    parity: {{rows: 32, min_label_agreement: 0.5, enforce: []}}
""" + TARGET.format(max_drop=max_drop)


def cli(*args) -> int:
    """`edgebert ARGS` in this process, for a module-scoped fixture (no monkeypatch there)."""
    argv, sys.argv = sys.argv, ["edgebert", *map(str, args)]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.argv = argv
    return 0


@pytest.fixture(scope="module")
def budget_run(tiny_model_dir, tmp_path_factory):
    """One budget search on the tiny model, shared by the tests that read its folder."""
    folder = tmp_path_factory.mktemp("budget")
    data = folder / "data"
    write_jsonl(data / "train.jsonl", sample_rows("train", 300))
    write_jsonl(data / "validation.jsonl", sample_rows("validation", 80))
    write_jsonl(data / "test.jsonl", sample_rows("validation", 160, seed=3)[80:])
    recipe = folder / "budget.yaml"
    recipe.write_text(budget_recipe(tiny_model_dir, data, max_drop=50.0))
    assert cli("run", recipe, "--out", folder / "runs") == 0
    return folder / "runs" / "tiny-budget-budget", recipe


def test_budget_search_screens_then_trains_the_kept_shapes_in_full(budget_run):
    root, _ = budget_run
    report = json.loads((root / "budget.json").read_text())
    screen = [r for r in report["trials"] if r["rung"] == "screen"]
    full = [r for r in report["trials"] if r["rung"] == "full"]
    assert len(screen) == 4 and len(full) == 2  # the grid, then keep: 2
    assert {json.dumps(r["params"], sort_keys=True) for r in full} <= {
        json.dumps(r["params"], sort_keys=True) for r in screen
    }
    for row in screen:
        resolved = (Path(row["run_dir"]) / "recipe.resolved.yaml").read_text()
        assert "epochs: 1" in resolved and "type: bench" not in resolved
    # only the proof reads the test split: no trial's stage (nor the twin's) scores it
    trial_metrics = list(root.glob("*-*-*/trial-*/metrics.json")) + list(
        root.glob("twin-*/metrics.json")
    )
    assert len(trial_metrics) == 7  # 4 screened, 2 in full, the twin
    for path in trial_metrics:
        assert "test" not in json.loads(path.read_text())["student"], path
    (teacher,) = root.glob("teacher-*")
    teacher_runs = list((teacher / "stages").iterdir())
    assert [p.name for p in teacher_runs] == ["00-teacher"]  # the teacher trained once
    assert len(list((root / "cache").glob("teacher_logits-*.safetensors"))) == 1


def test_budget_chooses_the_fastest_kept_file_and_proves_it_on_test(budget_run):
    root, _ = budget_run
    report = json.loads((root / "budget.json").read_text())
    full = [r for r in report["trials"] if r["rung"] == "full"]
    chosen = report["chosen"]
    assert chosen["objective"] == min(r["objective"] for r in full if r["drop"] <= 50.0)
    assert chosen["drop"] == pytest.approx(100 * (report["teacher_validation"] - chosen["score"]))
    proof = report["proof"]
    assert set(proof["paired"]) == {"chosen - teacher", "chosen - peer", "chosen - no-teacher twin"}
    assert set(proof["test_scores"]) == {"chosen", "no-teacher twin", "teacher", "peer"}
    (twin_dir,) = root.glob("twin-*")
    twin = (twin_dir / "recipe.resolved.yaml").read_text()
    assert "distill" not in twin
    summary = (root / "summary.txt").read_text()
    assert summary.startswith("budget: max_drop 50.0 (accuracy) -> trial ") and "\n" not in (
        summary.strip()
    )
    assert (root / "front.png").stat().st_size > 0 and (root / "proof" / "report.html").is_file()
    assert "| rung | trial | shape |" in (root / "budget.md").read_text()


def test_a_restarted_budget_search_runs_nothing_again(budget_run, run_cli, tmp_path):
    root, recipe = budget_run
    done = list(root.glob("*-screen-*/trial-*/metrics.json"))
    before = {p: p.stat().st_mtime_ns for p in done}
    summary, proof = (root / "summary.txt").read_text(), root / "proof" / "report.json"
    benched = json.loads(proof.read_text())["created"]
    code, _, err = run_cli("run", recipe, "--out", root.parent)
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in done} == before and len(before) == 4
    assert json.loads(proof.read_text())["created"] == benched  # the test split benched once
    assert (root / "summary.txt").read_text() == summary


def test_a_rerun_with_another_budget_reuses_the_teacher_and_the_screen(budget_run, run_cli):
    """Another `screen.keep` promotes other shapes: they get a full rung of their own (the
    first search's full trials stay as they were), the teacher and the screen are not run
    again."""
    root, recipe = budget_run
    kept = [
        *root.glob("*-screen-*/trial-*/metrics.json"),
        *root.glob("*-full-*/trial-*/metrics.json"),
    ]
    kept += root.glob("teacher-*/metrics.json")
    before = {p: p.stat().st_mtime_ns for p in kept}
    code, _, err = run_cli("run", recipe, "--out", root.parent, "--set", "target.screen.keep=1")
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in kept} == before and len(before) == 7
    assert len(list(root.glob("*-full-*"))) == 2 and len(list(root.glob("*-screen-*"))) == 1
    report = json.loads((root / "budget.json").read_text())
    assert len([r for r in report["trials"] if r["rung"] == "full"]) == 1
    assert report["chosen"]["file"].startswith(str(root / "tiny-budget-full-"))
    assert list(root.glob("twin-*/state.json"))  # the chosen shape's twin ran


def test_a_rerun_after_the_student_stage_changed_trains_new_rungs_on_the_same_teacher(
    budget_run, run_cli
):
    """A changed student stage must not be reported with the old stage's trials: its rungs and
    twin are new folders, the teacher (whose stage did not change) is reused."""
    root, recipe = budget_run
    teachers = {p: p.stat().st_mtime_ns for p in root.glob("teacher-*/metrics.json")}
    screens = set(root.glob("*-screen-*"))
    code, _, err = run_cli(
        "run", recipe, "--out", root.parent, "--set", "stages.1.training.lr=1.0e-3"
    )
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in root.glob("teacher-*/metrics.json")} == teachers
    assert len(teachers) == 1 and len(set(root.glob("*-screen-*")) - screens) == 1
    new_screen = (set(root.glob("*-screen-*")) - screens).pop()
    report = json.loads((root / "budget.json").read_text())
    assert len(report["trials"]) == 6  # the new screen's 4 trials, then its 2 full ones
    trained = (new_screen / "trial-000" / "recipe.resolved.yaml").read_text()
    assert "lr: 0.001" in trained
    twins = [
        t for t in root.glob("twin-*") if "lr: 0.001" in (t / "recipe.resolved.yaml").read_text()
    ]
    assert len(twins) == 1  # the chosen shape again on hard labels, with the new stage


def _row(trial: int, drop: float, objective: float, **extra) -> dict:
    return (
        {"trial": trial, "params": {"t": trial}, "score": 0.9, "drop": drop}
        | {"objective": objective, "b1_ms": 1.0, "size_mb": 5.0}
        | extra
    )


def test_the_choice_is_the_fastest_within_the_drop_and_names_what_bound():
    target = TargetConfig.model_validate(
        {"max_drop": 1.0, "shapes": {"keep_layers": [[0]]}, "max_size_mb": 6.0}
    )
    rows = [_row(0, 0.5, 0.5), _row(1, 2.0, 0.2), _row(2, 0.9, 0.3, size_mb=7.0), _row(3, 0.1, 0.9)]
    assert choose(rows, target)["trial"] == 0
    assert binding(rows, choose(rows, target), target) == "max_drop, max_size_mb"
    assert binding([_row(0, 0.5, 0.1)], _row(0, 0.5, 0.1), target).startswith("none")
    screened = [_row(5, 0.2, 0.05, rung="screen"), _row(6, 0.2, 0.05, rung="screen", promoted=True)]
    assert binding(rows + screened, choose(rows, target), target) == (
        "max_drop, max_size_mb, screen.keep"
    )
    assert promising(rows, 1.0, 2) == [{"t": 2}, {"t": 0}]


def test_a_trial_recipe_points_at_the_trained_teacher_and_carries_the_shape():
    raw = {
        "name": "r",
        "stages": [
            {"type": "finetune", "name": "teacher", "model": "m"},
            {
                "type": "train",
                "name": "student",
                "model": "@teacher",
                "training": {"epochs": 3},
                "with": [
                    {"distill": {"teacher": "@teacher"}},
                    {"prune_structured": {"heads": 0.4, "ffn": 0.4, "start_epoch": 2}},
                    {"qat": {"start_epoch": 3}},
                ],
            },
            {"type": "bench"},
        ],
        "search": {},
        "target": {},
    }
    shape = {"keep_layers": [0, 3], "prune": 0.25, "min_count": 2, "qat": True}
    out = trial_recipe(raw, "teacher", Path("/t"), "student", shape, epochs=1)
    (student,) = out["stages"]
    assert student["model"] == "/t" and student["with"][0] == {
        "distill": {"teacher": "/t", "retokenize": True}
    }
    assert student["keep_layers"] == [0, 3] and student["vocab"] == {"min_count": 2}
    assert student["with"][1]["prune_structured"] | {} == {
        "heads": 0.25,
        "ffn": 0.25,
        "start_epoch": 1,
        "end_epoch": 1,
    }
    assert student["with"][2] == {"qat": {"start_epoch": 1}} and "target" not in out
    assert [list(m) for m in without_teacher(out, "student")["stages"][0]["with"]] == [
        ["prune_structured"],
        ["qat"],
    ]


def test_the_twin_of_a_student_distilled_over_augmented_copies_trains_on_those_copies():
    augment = {"copies": 2, "steps": [{"type": "delete", "p": 0.1}]}
    transfer = {"augment": augment, "datasets": ["sst2"]}
    raw = {
        "name": "r",
        "data": {"dataset": "sst2"},
        "stages": [
            {
                "type": "train",
                "name": "student",
                "with": [{"distill": {"teacher": "/t", "transfer": transfer}}, {"qat": {}}],
            }
        ],
    }
    twin = without_teacher(raw, "student")
    assert twin["data"] == {"dataset": "sst2", "augment": augment}
    assert twin["stages"][0]["with"] == [{"qat": {}}]
    assert "augment" not in raw["data"]  # the trial's own recipe is left as it was
    own = {**raw, "data": {"dataset": "sst2", "augment": {"copies": 1}}}
    assert without_teacher(own, "student")["data"]["augment"] == {"copies": 1}


def test_a_searched_width_reaches_the_pruning_modifier_and_only_then():
    raw = {
        "name": "r",
        "stages": [
            {"type": "finetune", "name": "teacher", "model": "m"},
            {"type": "train", "name": "student", "model": "@teacher", "training": {"epochs": 3}},
        ],
    }
    shape = {"keep_layers": [0, 1], "prune": 0.0, "hidden": 0.25, "min_count": 0, "qat": False}
    out = trial_recipe(raw, "teacher", Path("/t"), "student", shape, epochs=None)
    assert out["stages"][0]["with"] == [
        {
            "prune_structured": {
                "heads": 0.0,
                "ffn": 0.0,
                "start_epoch": 1,
                "end_epoch": 1,
                "hidden": 0.25,
            }
        }
    ]
    searched = ShapeSpace(keep_layers=[[0], [0, 1]], prune=[0.0, 0.4], hidden=[0.0, 0.25])
    assert shape_space(searched)["hidden"] == [0.0, 0.25] and searched.size() == 8
    assert "hidden" not in shape_space(ShapeSpace(keep_layers=[[0]]))
    unsearched = {"keep_layers": [0], "prune": 0.0, "min_count": 0, "qat": False}
    assert "hidden 0.25, " in shape_text(shape) and "hidden" not in shape_text(unsearched)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("target: {max_drop: 1.0, shapes: {keep_layers: [[0]]}}\n", "target: needs a search:"),
        (
            TARGET.format(max_drop=1.0).replace("max_drop: 1.0", "max_drop: 1.0\n  student: pupil"),
            "target.student: no stage named 'pupil'",
        ),
        (
            TARGET.format(max_drop=1.0).replace("[[0], [0, 1]]", "[[1, 0]]"),
            "target.shapes.keep_layers: [1, 0]: give increasing layer numbers",
        ),
        (
            TARGET.format(max_drop=1.0) + "  space: {stages.1.training.lr: [0.1]}\n",
            "search.space: a target search draws target.shapes",
        ),
    ],
)
def test_a_bad_target_is_one_line_naming_the_field(
    tiny_model_dir, tiny_data, tmp_path, run_cli, block, message
):
    write_jsonl(tiny_data / "test.jsonl", sample_rows("validation", 20))
    text = budget_recipe(tiny_model_dir, tiny_data, 1.0)
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text[: text.index("target:")] + block)
    code, _, err = run_cli("run", recipe, "--dry-run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_screening_trial_reads_fewer_rows_and_epochs():
    raw = {
        "name": "r",
        "data": {"dataset": "d"},
        "stages": [
            {"type": "finetune", "name": "teacher", "model": "m"},
            {"type": "train", "name": "student", "model": "@teacher", "training": {"epochs": 3}},
        ],
    }
    shape = {"keep_layers": [0], "prune": 0.0, "min_count": 0, "qat": False}
    out = trial_recipe(raw, "teacher", Path("/t"), "student", shape, 1, max_train_rows=500)
    assert out["data"]["max_train_rows"] == 500 and out["stages"][0]["training"]["epochs"] == 1
    assert "max_train_rows" not in raw["data"] and out["stages"][0]["with"] == []


def test_a_screening_trial_leaves_the_transfer_set_to_the_full_rung_unless_asked():
    transfer = {"augment": {"copies": 2}}
    raw = {
        "name": "r",
        "data": {},
        "stages": [
            {"type": "finetune", "name": "teacher", "model": "m"},
            {
                "type": "train",
                "name": "student",
                "model": "@teacher",
                "with": [{"distill": {"teacher": "@teacher", "transfer": transfer}}],
            },
        ],
    }
    shape = {"keep_layers": [0], "prune": 0.0, "min_count": 0, "qat": False}

    def distill(**rung) -> dict:
        out = trial_recipe(raw, "teacher", Path("/t"), "student", shape, 1, **rung)
        return out["stages"][0]["with"][0]["distill"]

    assert distill(transfer=False) == {"teacher": "/t"}
    assert distill() == {"teacher": "/t", "transfer": transfer}
    assert raw["stages"][1]["with"][0]["distill"]["transfer"] == transfer
    assert ScreenConfig().transfer is False


def test_a_screening_rung_leaves_qat_to_the_full_rung_unless_asked():
    params = {"keep_layers": "0,2", "prune": 0.4, "min_count": 1, "qat": True}
    assert rung_shape(params, None) == params | {"keep_layers": [0, 2]}
    assert rung_shape(params, ScreenConfig())["qat"] is False
    assert rung_shape(params, ScreenConfig(qat=True))["qat"] is True


def test_a_completed_rerun_of_a_stopped_trial_is_reported_without_the_stop():
    """Optuna's retry copies the stopped run's attributes, its error with them, into the re-run;
    once the re-run completes the error is history, not the trial's state."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    space = {"prune": optuna.distributions.CategoricalDistribution([0.0, 0.4])}
    stopped = {"error": "stopped: interrupted", "run_dir": "trial-000"}
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params={"prune": 0.4},
            distributions=space,
            user_attrs=stopped,
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.64, 0.34],
            params={"prune": 0.4},
            distributions=space,
            user_attrs=stopped | {"score": 0.64, "drop": 1.3},
            system_attrs={"failed_trial": 0},
        )
    )
    (row,) = trial_rows(study)
    assert row["trial"] == 0 and row["score"] == 0.64 and "error" not in row

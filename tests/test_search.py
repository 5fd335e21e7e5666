"""Hyperparameter search: trials as sub-runs, a ranked summary, and the best recipe written out."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from compress.engine.recipe import load_recipe
from compress.engine.search import STOPPED, Requeue, last_runs
from tests.conftest import slow_runner, tiny_recipe


def _search_recipe(tmp_path, tiny_model_dir, tiny_data, block: str):
    recipe = tmp_path / "search.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1) + block)
    return recipe


def test_grid_search_runs_every_point_and_writes_the_best_recipe(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = _search_recipe(
        tmp_path,
        tiny_model_dir,
        tiny_data,
        """search:
  method: grid
  trials: 10
  metric: macro_f1
  space:
    stages.0.training.lr: [1.0e-5, 2.0e-3]
    stages.0.training.batch_size: [16]
""",
    )
    code, out, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 0, err
    root = tmp_path / "runs" / out.strip().split("/")[-1]
    summary = json.loads((root / "summary.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 2  # the grid has two points: trials stops there
    assert sorted(t["params"]["stages.0.training.lr"] for t in trials) == [1.0e-5, 2.0e-3]
    for trial in trials:
        metrics = json.loads(
            (root / "trials" / f"trial-{trial['trial']:03d}" / "metrics.json").read_text()
        )
        assert metrics["finetune"]["validation"]["macro_f1"] == trial["macro_f1"]
        resolved = yaml.safe_load(
            (root / "trials" / f"trial-{trial['trial']:03d}" / "recipe.resolved.yaml").read_text()
        )
        assert resolved["stages"][0]["training"]["lr"] == trial["params"]["stages.0.training.lr"]
        assert resolved["search"] is None
    best = max(trials, key=lambda t: t["macro_f1"])
    assert summary["best"]["trial"] == best["trial"]
    best_recipe = load_recipe(root / "best.yaml")
    assert best_recipe.search is None and best_recipe.name == "tiny-best"
    assert best_recipe.stages[0].training.lr == best["params"]["stages.0.training.lr"]
    table = (root / "summary.md").read_text()
    assert (
        table.splitlines()[4].startswith(f"| 1 | {best['trial']} |") and "| rank | trial |" in err
    )
    assert (root / "trials.png").read_bytes()[:4] == b"\x89PNG"


def test_random_search_is_seeded(tmp_path, tiny_model_dir, tiny_data):
    from compress.engine.search import run_search

    recipe = _search_recipe(
        tmp_path,
        tiny_model_dir,
        tiny_data,
        """search:
  method: random
  trials: 3
  space:
    stages.0.training.lr: {low: 1.0e-5, high: 1.0e-3, log: true}
    stages.0.training.epochs: {low: 1, high: 3, integer: true}
""",
    )
    seen = []

    def fake_trial(trial_recipe, folder):  # records what would run, writes the metrics a run writes
        folder.mkdir(parents=True)
        seen.append((trial_recipe.stages[0].training.lr, trial_recipe.stages[0].training.epochs))
        (folder / "metrics.json").write_text(
            json.dumps(
                {"finetune": {"validation": {"accuracy": trial_recipe.stages[0].training.lr}}}
            )
        )

    root = run_search(recipe, [], tmp_path / "a", fake_trial)
    first = list(seen)
    seen.clear()
    run_search(recipe, [], tmp_path / "b", fake_trial)
    assert seen == first and len(set(first)) == 3
    assert all(1e-5 <= lr <= 1e-3 and epochs in (1, 2, 3) for lr, epochs in first)
    summary = json.loads((root / "summary.json").read_text())
    assert summary["best"]["accuracy"] == max(lr for lr, _ in first)


def test_bad_search_blocks_name_the_field(tmp_path, tiny_model_dir, tiny_data, run_cli):
    cases = {
        "search:\n  method: grid\n  space:\n    stages.0.training.lr: {low: 0.1, high: 0.2}\n": "space.stages.0.training.lr: grid search needs a list of values",
        "search:\n  space:\n    stages.0.training.lr: [-1.0]\n": "search.space.stages.0.training.lr:",
        "search:\n  space:\n    stages.0.trainin.lr: [0.1]\n": "search.space.stages.0.trainin.lr:",
        "search:\n  stage: student\n  space:\n    stages.0.training.lr: [0.1]\n": "search.stage: no stage named 'student'",
        "search:\n  space:\n    stages.0.training.lr: {low: 0.2, high: 0.1}\n": "high must be above low",
    }
    for block, message in cases.items():
        recipe = _search_recipe(tmp_path, tiny_model_dir, tiny_data, block)
        code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
        assert code == 2 and message in err, (block, err)
        assert len(err.strip().splitlines()) == 1


def test_two_workers_share_one_study_and_run_each_trial_once(tmp_path, tiny_model_dir, tiny_data):
    """Two `edgebert run` processes on one recipe whose search names a shared SQLite study:
    the six grid points run once each, split between the two, and `best.yaml` is written."""

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    recipe = _search_recipe(
        tmp_path,
        tiny_model_dir,
        tiny_data,
        f"""search:
  method: grid
  trials: 6
  storage: {storage}
  study: lr-grid
  space:
    stages.0.training.lr: [1.0e-5, 1.0e-4, 5.0e-4, 1.0e-3, 2.0e-3, 3.0e-3]
""",
    )
    command = [sys.executable, "-m", "compress.cli", "run", str(recipe), "--out"]
    workers = [
        subprocess.Popen([*command, str(tmp_path / out)], stdout=subprocess.PIPE, text=True)
        for out in ("machine-a", "machine-b")
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    study = optuna.load_study(study_name="lr-grid", storage=storage)
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.number for t in done) == list(range(6))
    assert sorted(t.params["stages.0.training.lr"] for t in done) == [
        1.0e-5,
        1.0e-4,
        5.0e-4,
        1.0e-3,
        2.0e-3,
        3.0e-3,
    ]
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both took trials
    for t in done:  # each trial ran in the folder of the worker that took it, once
        assert (Path(t.user_attrs["run_dir"]) / "metrics.json").is_file()
    folders = sorted(
        p.name for out in ("machine-a", "machine-b") for p in (tmp_path / out).glob("*/trials/*")
    )
    assert folders == [f"trial-{n:03d}" for n in range(6)]
    for out in outputs:  # each worker ends with the summary of every trial and the best recipe
        root = Path(out.strip().splitlines()[-1])
        assert root.name == "lr-grid-search" and (root / "best.yaml").is_file()
    last = max((Path(o.strip().splitlines()[-1]) for o in outputs), key=lambda r: r.stat().st_mtime)
    assert len(json.loads((last / "summary.json").read_text())["trials"]) == 6


def test_a_worker_that_loses_the_schema_race_opens_the_study_on_retry(tmp_path, monkeypatch):
    """CI saw it: two workers on a fresh database both create Optuna's schema, one gets
    `UNIQUE constraint failed: alembic_version.version_num`. It must retry, not exit."""
    from sqlalchemy.exc import IntegrityError

    from compress.engine import search

    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE"))
        return real(url, **kwargs)

    monkeypatch.setattr(search.optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(search.time, "sleep", lambda seconds: None)
    config = search.SearchConfig(space={"seed": [1]})
    storage = search._open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", {}, config)
    assert len(calls) == 2 and storage.get_all_studies() == []


SLOW_TRIALS = slow_runner(0.3)


def _worker_inside_first_trial(tmp_path, tiny_model_dir, tiny_data, study: str, extra: str = ""):
    """A search worker on a 3-point grid in a shared SQLite study, each optimiser step slowed,
    once it is inside its first trial's training; (the worker, its CLI arguments, the trials
    folder)."""
    recipe = _search_recipe(
        tmp_path,
        tiny_model_dir,
        tiny_data,
        f"""search:
  method: grid
  trials: 3
  storage: sqlite:///{tmp_path / "shared.db"}
  study: {study}{extra}
  space:
    stages.0.training.lr: [1.0e-4, 5.0e-4, 1.0e-3]
""",
    )
    command = ["run", str(recipe), "--out", str(tmp_path / "runs")]
    worker = subprocess.Popen(
        [sys.executable, "-c", SLOW_TRIALS, *command], stderr=subprocess.PIPE, text=True
    )
    trials = tmp_path / "runs" / f"{study}-search" / "trials"
    for _ in range(600):
        if (trials / "trial-000" / "run.log").is_file():
            break
        assert worker.poll() is None
        time.sleep(0.1)
    time.sleep(1.5)  # inside the first trial's training
    return worker, command, trials


def test_a_worker_killed_mid_trial_leaves_no_lost_trial(tmp_path, tiny_model_dir, tiny_data):
    """kill -9 of a worker while its trial runs: the trial stops beating its heartbeat, the
    next worker fails it once the grace period is over, runs it again with the same values,
    and the grid completes with every point scored."""
    doomed, command, _ = _worker_inside_first_trial(
        tmp_path,
        tiny_model_dir,
        tiny_data,
        "killed",
        "\n  heartbeat_seconds: 1\n  grace_seconds: 3",
    )
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    survivor = subprocess.run(
        [sys.executable, "-m", "compress.cli", *command], capture_output=True, text=True
    )
    assert survivor.returncode == 0, survivor.stderr[-2000:]
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{tmp_path / 'shared.db'}")
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[0] == "FAIL" and list(states.values()).count("COMPLETE") == 3, states
    summary = json.loads((tmp_path / "runs" / "killed-search" / "summary.json").read_text())
    rows = summary["trials"]
    assert [r["trial"] for r in rows] == [0, 1, 2] and all("macro_f1" not in r for r in rows)
    assert all("accuracy" in r for r in rows) and rows[0]["runs"] == 2
    assert rows[0]["params"] == {"stages.0.training.lr": 1.0e-4}  # the same point, run again


def test_a_stopped_worker_stops_the_search_and_its_trial_continues(
    tmp_path, tiny_model_dir, tiny_data
):
    """SIGTERM in the middle of a trial stops the whole search (the trials after it do not
    start); the same command then continues that trial from where it stopped, in its folder,
    and runs the rest. `retries: 0`: a stop is not a crash, so it uses up no retry."""
    worker, command, trials = _worker_inside_first_trial(
        tmp_path, tiny_model_dir, tiny_data, "stopped", "\n  retries: 0"
    )
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 2 and "the stopped trial is queued again" in err, err[-2000:]
    assert sorted(p.name for p in trials.iterdir()) == ["trial-000"]  # nothing after it began
    study = optuna.load_study(study_name="stopped", storage=storage)
    assert study.trials[0].user_attrs["error"] == "stopped: interrupted"

    again = subprocess.run(
        [sys.executable, "-m", "compress.cli", *command], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in (trials / "trial-000" / "run.log").read_text()
    assert sorted(p.name for p in trials.iterdir()) == ["trial-000", "trial-001", "trial-002"]
    study = optuna.load_study(study_name="stopped", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["stages.0.training.lr"] for t in done) == [1.0e-4, 5.0e-4, 1.0e-3]


def _fail_next_run(study: optuna.Study, error: str | None) -> None:
    """The next queued run of the trial starts and fails with `error` (None: its worker died)."""
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    trial.set_user_attr("error", error)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    Requeue(crash_retries=1)(study, study.trials[trial.number])


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_stops_do_not_use_up_the_crash_retries():
    """`retries: 1` and a trial stopped four times, then crashed, then killed: each stop and
    the first crash queue it again with its values; the second crash ends it (Optuna's own
    callback counts the stops too and would have given up at the second stop)."""
    study = optuna.create_study()
    study.enqueue_trial({"x": 7})
    waiting = []
    for error in [STOPPED] * 4 + ["stopped: RuntimeError", None]:
        _fail_next_run(study, error)
        waiting.append(sum(t.state == optuna.trial.TrialState.WAITING for t in study.trials))
    assert waiting == [1, 1, 1, 1, 1, 0]
    assert len(study.trials) == 6 and {t.params["x"] for t in study.trials} == {7}
    ((slot, last),) = last_runs(study)
    assert slot == 0 and last.number == 5

"""A run killed with SIGKILL mid-training resumes and ends exactly where an uninterrupted run
ends; Ctrl-C stops cleanly with a checkpoint; completed stages are not redone."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_ok, slow_runner, tiny_recipe

pytestmark = pytest.mark.fault  # the fault suite (README "Fault suite")

SLOW_RUNNER = slow_runner(0.03)


def two_stage_recipe(tmp_path, model_dir, data, modifiers: str = "") -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(
        tiny_recipe(
            model_dir, data, epochs=1, threads=1
        )  # one thread: bit-exact whatever ran before
        + "  - type: train\n"
        + "    name: student\n"
        + "    model: '@finetune'\n"
        + "    training: {lr: 3.0e-4, batch_size: 8, epochs: 3, seed: 3, checkpoint_steps: 10, threads: 1}\n"
        + modifiers
    )
    return path


# Pruned at the end of epoch 1, masks updated every 10 steps, QAT from epoch 2: a kill in epoch 2
# must bring back the pruned shapes (narrower width included), the masks and the fake-quant wrappers before the weights.
ALL_MODIFIERS = """    with:
      - prune_structured: {heads: 0.5, ffn: 0.25, hidden: 0.25, start_epoch: 1, importance: magnitude}
      - prune_unstructured: {final_sparsity: 0.3, start_step: 0, end_step: 120, frequency: 10}
      - qat: {start_epoch: 2, freeze_observers_after: 0.9}
"""


def weights_digest(run_dir: Path, stage: str) -> str:
    return hashlib.sha256(
        (run_dir / "stages" / stage / "model" / "model.safetensors").read_bytes()
    ).hexdigest()


def final_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())["student"]
    return {k: metrics[k] for k in ("validation", "history", "steps", "best_epoch")}


def start_slow_run(recipe: Path, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_RUNNER, "run", str(recipe), "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(
    run_dir: Path, min_step: int, proc: subprocess.Popen, timeout: float = 120
) -> int:
    state = run_dir / "stages" / "01-student" / "checkpoint" / "state.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if state.is_file():
            try:
                step = json.loads(state.read_text())["step"]
            except (ValueError, OSError):
                step = 0
            if step >= min_step:
                return step
        time.sleep(0.02)
    raise AssertionError("no checkpoint in time")


# Cut along a cubic curve at steps 40, 60, 80 and 100: a kill after step 60 resumes mid-schedule,
# the narrowed shapes, the cuts already made and the optimiser rebuilt after them all restored.
CUBIC_CUTS = """    with:
      - prune_structured:
          {heads: 0.5, ffn: 0.25, hidden: 0.25, importance: magnitude,
           cubic: {start_step: 20, end_step: 100, frequency: 20}}
      - qat: {start_epoch: 3}
"""


@pytest.mark.parametrize(
    "modifiers",
    ["", ALL_MODIFIERS, CUBIC_CUTS],
    ids=["plain", "prune+sparsity+qat", "cubic-cuts+qat"],
)
def test_sigkill_then_resume_matches_an_uninterrupted_run(
    tmp_path, tiny_model_dir, tiny_data, run_cli, modifiers
):
    recipe = two_stage_recipe(tmp_path, tiny_model_dir, tiny_data, modifiers)
    code, _, err = run_cli("run", recipe, "--run-dir", tmp_path / "straight")
    assert code == 0, err

    killed = tmp_path / "killed"
    proc = start_slow_run(recipe, killed)
    step = wait_for_checkpoint(killed, 60, proc)  # epoch 2 of 3 (50 steps per epoch)
    first_stage_weights = weights_digest(killed, "00-finetune")
    first_stage_mtime = (killed / "stages/00-finetune/model/model.safetensors").stat().st_mtime_ns
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    assert not (killed / "stages/01-student/model").exists()

    code, out, err = run_cli("run", "--resume", killed)
    assert code == 0, err
    assert "resuming after 1 stages" in err and "resumed from" in err
    assert (
        killed / "stages/00-finetune/model/model.safetensors"
    ).stat().st_mtime_ns == first_stage_mtime
    assert weights_digest(killed, "00-finetune") == first_stage_weights
    assert final_metrics(killed) == final_metrics(tmp_path / "straight")
    assert weights_digest(killed, "01-student") == weights_digest(
        tmp_path / "straight", "01-student"
    )
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["resumed"]) == 1
    assert not (killed / "stages/01-student/checkpoint").exists()  # removed once the stage is done
    assert step >= 60


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_says_how_to_resume(
    tmp_path, tiny_model_dir, tiny_data, signum
):
    recipe = two_stage_recipe(tmp_path, tiny_model_dir, tiny_data)
    run_dir = tmp_path / "interrupted"
    proc = start_slow_run(recipe, run_dir)
    wait_for_checkpoint(run_dir, 15, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert (
        err.strip().splitlines()[-1]
        == f"edgebert: error: interrupted; continue with: edgebert run --resume {run_dir}"
    )
    assert "Traceback" not in err
    state = json.loads((run_dir / "stages/01-student/checkpoint/state.json").read_text())
    assert state["step"] >= 15 and not state["epoch_done"]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"


def test_existing_run_dir_needs_resume_or_overwrite(tmp_path, tiny_model_dir, tiny_data, run_cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1))
    target = tmp_path / "run"
    assert run_cli("run", recipe, "--run-dir", target)[0] == 0
    code, _, err = run_cli("run", recipe, "--run-dir", target)
    assert code == 2 and f"run directory {target} already exists: use --resume" in err
    code, _, err = run_cli("run", recipe, "--run-dir", target, "--overwrite")
    assert code == 0, err
    code, _, err = run_cli("run", "--resume", tmp_path)
    assert code == 2 and "not a run directory" in err


def test_damaged_checkpoint_is_a_one_line_error(tmp_path, tiny_model_dir, tiny_data, run_cli):
    recipe = two_stage_recipe(tmp_path, tiny_model_dir, tiny_data)
    run_dir = tmp_path / "damaged"
    proc = start_slow_run(recipe, run_dir)
    wait_for_checkpoint(run_dir, 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    weights = run_dir / "stages/01-student/checkpoint/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_cli("run", "--resume", run_dir)
    assert code == 2
    assert "checkpoint" in err and "is damaged" in err and "remove it to restart the stage" in err


def test_a_kill_between_the_two_renames_of_a_checkpoint_swap_is_recovered(tmp_path):
    from bench.files import recover_replaced_dir

    target = tmp_path / "checkpoint"
    old = tmp_path / ".checkpoint.old-123"
    old.mkdir()
    (old / "state.json").write_text('{"step": 40}')
    recover_replaced_dir(target)
    assert json.loads((target / "state.json").read_text()) == {"step": 40} and not old.exists()
    recover_replaced_dir(target)  # nothing to do the second time
    assert target.is_dir()


def test_a_second_writer_is_refused_and_nothing_is_touched(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    """Two `run --resume` on one run directory, or two exports into one folder: the second
    gets a one-line lock error while the first holds the folder, and changes nothing."""
    from bench.files import FolderLock

    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1))
    run_dir, _, _ = run_ok(run_cli, recipe, tmp_path / "runs")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with FolderLock(run_dir, "run"):  # another process is resuming it
        code, _, err = run_cli("run", "--resume", run_dir)
    assert code == 2
    assert err.strip() == (
        f"edgebert: error: {run_dir} is in use by another edgebert run (pid {os.getpid()}); "
        "wait for it to finish or stop it first"
    )
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    out = tmp_path / "export"
    with FolderLock(out, "export"):
        code, _, err = run_cli("export", run_dir / "stages" / "00-finetune" / "model", "--out", out)
    assert code == 2 and "is in use by another edgebert export" in err
    assert sorted(p.name for p in out.iterdir()) == [".edgebert.lock"]  # nothing written
    code, _, err = run_cli("run", "--resume", run_dir)  # once free, the resume goes ahead
    assert code == 0, err


def test_until_stops_after_the_named_stage_and_resume_runs_the_rest(
    tmp_path, tiny_model_dir, tiny_data, run_cli, monkeypatch
):
    """The GPU/CPU split: `--until finetune` makes only the teacher; `--resume` (on any
    machine) continues with the student without redoing the teacher. The run directory is
    given relative, as a run copied between machines is: every file lands inside it."""
    recipe = two_stage_recipe(tmp_path, tiny_model_dir, tiny_data)
    monkeypatch.chdir(tmp_path)
    run_dir = Path("split")
    code, _, err = run_cli("run", recipe, "--run-dir", run_dir, "--until", "finetune")
    assert code == 0, err
    assert f"stopped after stage 'finetune'; continue with: edgebert run --resume {run_dir}" in err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "stopped after stage 'finetune'"
    assert list(json.loads((run_dir / "metrics.json").read_text())) == ["finetune"]
    assert not (run_dir / "stages" / "01-student").exists()
    teacher = weights_digest(run_dir, "00-finetune")
    code, _, err = run_cli("run", "--resume", run_dir)
    assert code == 0, err
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "completed"
    assert list(json.loads((run_dir / "metrics.json").read_text())) == ["finetune", "student"]
    assert weights_digest(run_dir, "00-finetune") == teacher  # not redone
    stage_metrics = sorted(str(p) for p in run_dir.rglob("stages/*/metrics.json"))
    assert stage_metrics == [
        "split/stages/00-finetune/metrics.json",
        "split/stages/01-student/metrics.json",
    ]
    code, _, err = run_cli("run", recipe, "--run-dir", "x", "--until", "teacher")
    assert code == 2
    assert "--until: no stage named 'teacher' (stages: finetune, student)" in err
    assert not (tmp_path / "x").exists()

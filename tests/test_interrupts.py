"""SIGTERM (or Ctrl-C) stops a run within seconds wherever it is: in a step that never returns
to the loop's flag check, in evaluation, in export. Training stops leave a checkpoint of the
last complete step, and the resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

import compress.stages.export as export_stage
from compress.training import distributed
from compress.training.loop import TrainingPhase
from compress.training.loop_state import INTERRUPTS
from tests.conftest import tiny_recipe
from tests.test_training import make_phase

pytestmark = pytest.mark.fault  # the fault suite (README "Fault suite")

SETTINGS = {"epochs": 2, "checkpoint_steps": 1000, "threads": 1}  # no scheduled checkpoint


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    assert INTERRUPTS.grace <= 5.0  # the real bound: grace + one checkpoint write < 10 s
    monkeypatch.setattr(INTERRUPTS, "grace", 0.5)


def sigterm_then_hang() -> None:
    """A SIGTERM arrives, and the work in progress goes on for 30 s without looking at it."""
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(300):
        time.sleep(0.1)


def interrupted_fit(phase: TrainingPhase, folder) -> float:
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        phase.fit(folder)
    return time.perf_counter() - started


def assert_resumes_to_the_uninterrupted_weights(model_dir, folder) -> None:
    resumed, straight = make_phase(model_dir, **SETTINGS), make_phase(model_dir, **SETTINGS)
    resumed.fit(folder)
    straight.fit()
    for (name, p), (_, q) in zip(
        resumed.model.state_dict().items(), straight.model.state_dict().items()
    ):
        assert torch.equal(p, q), name
    assert [h["accuracy"] for h in resumed.state.history] == [
        h["accuracy"] for h in straight.state.history
    ]


def test_a_step_that_hangs_is_stopped_and_the_last_complete_step_saved(tiny_model_dir, tmp_path):
    phase = make_phase(tiny_model_dir, **SETTINGS)
    real_backward, calls = phase._backward, []

    def backward(run, batch):
        calls.append(1)
        if len(calls) == 3:
            sigterm_then_hang()
        real_backward(run, batch)

    phase._backward = backward
    assert interrupted_fit(phase, tmp_path / "ckpt") < 5
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert (state["step"], state["batches_done"], state["epoch_done"]) == (2, 2, False)
    assert_resumes_to_the_uninterrupted_weights(tiny_model_dir, tmp_path / "ckpt")


def test_a_signal_handled_just_after_the_stop_vote_stops_the_next_step(
    tiny_model_dir, tmp_path, monkeypatch
):
    """The vote's result must never overwrite the flag: a SIGTERM handled after the all-reduce
    read the flag was once lost, and the ranks trained on until the watchdog (CI saw a
    two-process run finish its training after the stop)."""
    phase = make_phase(tiny_model_dir, **SETTINGS)
    votes = []

    def vote_then_signal(flag: bool) -> bool:
        votes.append(flag)
        if len(votes) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the vote's answer is used
        return flag

    monkeypatch.setattr(distributed, "any_rank", vote_then_signal)
    interrupted_fit(phase, tmp_path / "ckpt")
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert (state["step"], votes) == (3, [False, False, True])


def test_a_stop_during_evaluation_saves_the_epochs_steps(tiny_model_dir, tmp_path):
    phase = make_phase(tiny_model_dir, **SETTINGS)
    phase.evaluate = lambda model=None: sigterm_then_hang()  # the epoch-end evaluation hangs
    assert interrupted_fit(phase, tmp_path / "ckpt") < 5
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert (state["step"], state["batches_done"], state["epoch_done"]) == (4, 4, False)
    assert state["history"] == []  # the epoch is evaluated again on resume
    assert_resumes_to_the_uninterrupted_weights(tiny_model_dir, tmp_path / "ckpt")


def test_sigterm_during_export_stops_the_run_and_resume_finishes_it(
    tmp_path, tiny_model_dir, tiny_data, run_cli, monkeypatch
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1) + "  - type: export\n    quantize: []\n"
    )
    real_export = export_stage.export_model
    monkeypatch.setattr(export_stage, "export_model", lambda *a, **k: sigterm_then_hang())
    started = time.perf_counter()
    code, _, err = run_cli("run", recipe, "--run-dir", tmp_path / "run")
    assert code == 2 and time.perf_counter() - started < 30
    assert err.strip().splitlines()[-1] == (
        f"edgebert: error: interrupted; continue with: edgebert run --resume {tmp_path / 'run'}"
    )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    monkeypatch.setattr(export_stage, "export_model", real_export)
    code, _, err = run_cli("run", "--resume", tmp_path / "run")
    assert code == 0, err
    assert "resuming after 1 stages" in err  # the trained model was kept, not trained again
    assert (tmp_path / "run" / "stages" / "01-export" / "onnx" / "model.onnx").is_file()

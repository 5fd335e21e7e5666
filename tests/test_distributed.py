"""Multi-process data-parallel training: 2 gloo processes match one process within tolerance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_recipe

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compress.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )


def test_two_gloo_processes_match_one_process(tmp_path, tiny_model_dir, tiny_data):
    """Without shuffling and dropout, rank r of 2 gets rows r, r+2, ... so each global batch of
    16 holds the same rows as the single process's batch, and the averaged gradients are equal:
    the two runs must agree to float rounding, which is what makes the sharding trustworthy."""
    model = tmp_path / "no-dropout"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(
        tiny_recipe(model, tiny_data, epochs=2, batch_size=16, lr=1e-3, shuffle=False)
    )
    single = _run(["run", str(recipe), "--out", str(tmp_path / "one")], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    double = _run(["run", str(recipe), "--nproc", "2", "--out", str(tmp_path / "two")], tmp_path)
    assert double.returncode == 0, double.stderr[-3000:]
    assert len(double.stdout.strip().splitlines()) == 1  # only rank 0 reports a run directory
    assert len(list((tmp_path / "two").iterdir())) == 1  # and only rank 0 wrote one
    one_dir, two_dir = (Path(p.stdout.strip().splitlines()[-1]) for p in (single, double))
    one, two = (
        json.loads((d / "metrics.json").read_text())["finetune"] for d in (one_dir, two_dir)
    )
    assert (one["world_size"], two["world_size"]) == (1, 2)  # two processes really trained
    assert two["steps"] == one["steps"] == 2 * 25  # global batch 16 = 2 x 8: same step count
    assert two["train_rows"] == one["train_rows"] == 400
    for a_epoch, b_epoch in zip(one["history"], two["history"]):
        assert b_epoch["train_loss"] == pytest.approx(a_epoch["train_loss"], abs=1e-4)
        assert b_epoch["accuracy"] == a_epoch["accuracy"]
    assert two["validation"]["n"] == 100  # evaluation shards gathered back to every row
    a = load_file(one_dir / "stages/00-finetune/model/model.safetensors")
    b = load_file(two_dir / "stages/00-finetune/model/model.safetensors")
    start = load_file(tiny_model_dir / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert (a[name] - start[name]).abs().max() > 1e-3  # it trained
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-4, rtol=0)


def test_two_processes_with_a_shuffled_sampler(tmp_path, tiny_model_dir, tiny_data):
    """Shuffling on: each rank draws its own half of a new permutation every epoch (torch's
    DistributedSampler, seeded by the recipe): the run trains on every row, over 2 processes."""
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=2, batch_size=16, lr=1e-3))
    done = _run(["run", str(recipe), "--nproc", "2", "--out", str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    result = json.loads((run_dir / "metrics.json").read_text())["finetune"]
    assert result["world_size"] == 2 and result["steps"] == 2 * 25
    assert result["train_rows"] == 400 and result["validation"]["n"] == 100
    losses = [epoch["train_loss"] for epoch in result["history"]]
    assert losses[1] < losses[0]  # it learned from the shuffled shards


def test_multi_process_refuses_what_it_cannot_split(tmp_path, tiny_model_dir, tiny_data):
    recipe = tmp_path / "odd.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1, batch_size=15))
    result = _run(["run", str(recipe), "--nproc", "2", "--out", str(tmp_path / "r")], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "edgebert: error: stages[0].training.batch_size: 15 does not "
        "split over 2 processes; use a multiple of --nproc (it stays the global batch size)"
    )


def test_sigterm_to_the_parent_stops_every_rank_and_the_run_resumes(
    tmp_path, tiny_model_dir, tiny_data
):
    """An orchestrator stops `edgebert run --nproc 2` with SIGTERM: the parent passes it on,
    each rank checkpoints, the parent exits 130, no rank trains on as an orphan, the run is
    recorded as interrupted, and `--resume` completes it."""
    import signal
    import time

    import psutil

    recipe = tmp_path / "long.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=10, batch_size=16, checkpoint_steps=10)
    )
    run_dir = tmp_path / "run"
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-m", "compress.cli", "run", str(recipe), "--nproc", "2"]
        + ["--run-dir", str(run_dir)],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = run_dir / "stages" / "00-finetune" / "checkpoint" / "state.json"
    for _ in range(1200):
        if checkpoint.is_file() or parent.poll() is not None:
            break
        time.sleep(0.1)
    ranks = [p for p in psutil.Process(parent.pid).children(recursive=True)]
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 130, err[-2000:]
    assert "interrupted" in err
    psutil.wait_procs(ranks, timeout=30)
    assert not [p for p in ranks if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert json.loads(checkpoint.read_text())["step"] >= 10
    resumed = _run(["run", "--resume", str(run_dir)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "completed"

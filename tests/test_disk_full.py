"""A full disk (ENOSPC) while a checkpoint, an ONNX file or a report is being written: a
one-line error that says how to continue, the previous checkpoint and every finished stage
intact, nothing half-written left behind, and `edgebert run --resume` completes once there is
space again. The failing writes are simulated: `fsync` of the file being written raises ENOSPC
(as it does on filesystems that report a full disk at flush), and the ONNX exporter, which
writes on its own, raises the OS error it would meet."""

from __future__ import annotations

import errno
import json
import os

import optimum.exporters.onnx as optimum_onnx
import pytest

from bench.files import is_disk_full
from tests.conftest import tiny_recipe

pytestmark = pytest.mark.fault  # the fault suite (README "Fault suite")

REAL_FSYNC = os.fsync


def full_disk_for(monkeypatch, fragment: str, after: int = 0) -> None:
    """Writes of files whose path holds `fragment` fail with ENOSPC, after `after` succeed
    (the fsync of a folder, which makes a rename durable, writes no data: never counted)."""
    seen = {"count": 0}

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if fragment in path and not os.path.isdir(path):
            seen["count"] += 1
            if seen["count"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        REAL_FSYNC(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def assert_disk_full_error(code: int, err: str, run_dir) -> None:
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgebert: error: disk full (") and "No space left on device" in last
    assert last.endswith(f"free space, then continue with: edgebert run --resume {run_dir}")
    assert "Traceback" not in err


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_resume_completes(
    tmp_path, tiny_model_dir, tiny_data, run_cli, monkeypatch
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=2, checkpoint_steps=5, threads=1)
    )
    run_dir = tmp_path / "run"
    full_disk_for(monkeypatch, "/.checkpoint.new-", after=4)  # the first checkpoint's 4 files
    code, _, err = run_cli("run", recipe, "--run-dir", run_dir)
    assert_disk_full_error(code, err, run_dir)
    stage = run_dir / "stages" / "00-finetune"
    state = json.loads((stage / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5  # the checkpoint before the failed one, whole
    assert sorted(p.name for p in stage.iterdir()) == ["checkpoint"]  # no half-written copy
    monkeypatch.setattr(os, "fsync", REAL_FSYNC)
    code, _, err = run_cli("run", "--resume", run_dir)
    assert code == 0, err
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "completed"
    assert json.loads((run_dir / "metrics.json").read_text())["finetune"]["steps"] == 50


def test_disk_full_during_onnx_export_keeps_the_trained_model(
    tmp_path, tiny_model_dir, tiny_data, run_cli, monkeypatch
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1) + "  - type: export\n    quantize: []\n"
    )
    run_dir = tmp_path / "run"
    real_export = optimum_onnx.main_export

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "model.onnx")

    monkeypatch.setattr(optimum_onnx, "main_export", no_space)
    code, _, err = run_cli("run", recipe, "--run-dir", run_dir)
    assert_disk_full_error(code, err, run_dir)
    export_dir = run_dir / "stages" / "01-export"
    assert not list(export_dir.rglob("*.onnx")) and not list(export_dir.rglob(".export-*"))
    monkeypatch.setattr(optimum_onnx, "main_export", real_export)
    code, _, err = run_cli("run", "--resume", run_dir)
    assert code == 0, err
    assert "resuming after 1 stages" in err  # the trained model was kept, not trained again
    assert (export_dir / "onnx" / "model.onnx").is_file()


def test_disk_full_during_the_report_and_resume_writes_it(
    tmp_path, tiny_model_dir, tiny_data, run_cli, monkeypatch
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1)
        + """  - type: export
    quantize: []
  - type: bench
    batch_sizes: [1]
    seq_lengths: [16]
    threads: 1
    min_seconds: 0.02
"""
    )
    run_dir = tmp_path / "run"
    full_disk_for(monkeypatch, "/.report.html.")
    code, _, err = run_cli("run", recipe, "--run-dir", run_dir)
    assert_disk_full_error(code, err, run_dir)
    assert not list(run_dir.rglob("report.html")) and not list(run_dir.rglob(".report.html.*"))
    monkeypatch.setattr(os, "fsync", REAL_FSYNC)
    code, _, err = run_cli("run", "--resume", run_dir)
    assert code == 0, err
    assert "resuming after 2 stages" in err
    assert len(list(run_dir.rglob("report.html"))) == 1


@pytest.mark.parametrize(
    ("exc", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (
            RuntimeError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            ),
            True,
        ),
        (OSError(errno.EACCES, "Permission denied"), False),
        (RuntimeError("shape mismatch"), False),
    ],
)
def test_disk_full_is_recognised_through_library_wrappers(exc, full):
    assert is_disk_full(exc) is full

"""Run directories treated as hostile ground: `--overwrite` deletes only a run directory and
only under its lock, runs resume after being moved, swaps survive leftovers, links are refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.files import (
    FolderLock,
    clean_stale_swaps,
    replace_dir_atomic,
    staging_dir,
    write_text_atomic,
)
from tests.conftest import tiny_recipe
from tests.test_resume import two_stage_recipe

pytestmark = pytest.mark.fault  # the fault suite (README "Fault suite")


def test_overwrite_refuses_a_folder_that_is_not_a_run_directory(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1))
    home = tmp_path / "work"  # a user's own folder, e.g. ~/work
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "chapter1.tex").write_text("years of work")
    code, _, err = run_cli("run", recipe, "--run-dir", home, "--overwrite")
    assert code == 2
    assert f"--overwrite: {home} is not a run directory" in err and "refusing to delete" in err
    assert (home / "thesis" / "chapter1.tex").read_text() == "years of work"


def test_overwrite_never_touches_a_run_that_is_live_in_another_process(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1))
    target = tmp_path / "run"
    assert run_cli("run", recipe, "--run-dir", target)[0] == 0
    before = sorted(str(p) for p in target.rglob("*"))
    with FolderLock(target, "run"):  # another process is still writing it
        code, _, err = run_cli("run", recipe, "--run-dir", target, "--overwrite")
    assert code == 2 and "is in use by another edgebert run" in err
    assert sorted(str(p) for p in target.rglob("*")) == before
    code, _, err = run_cli("run", recipe, "--run-dir", target, "--overwrite")
    assert code == 0, err  # once free, a run directory is replaced as asked


def test_a_run_moved_with_its_data_set_to_other_folders_resumes(
    tmp_path, tiny_model_dir, tiny_data, run_cli, monkeypatch
):
    """The GPU -> CPU split between machines whose paths differ: the run directory and the
    data set root both move, and `--resume` continues from the saved stage."""
    first_root = tmp_path / "machine-a" / "datasets"
    shutil.copytree(tiny_data, first_root / "mini")
    recipe = two_stage_recipe(tmp_path, tiny_model_dir, tiny_data)
    text = recipe.read_text()
    text = text.replace(f"  train: {tiny_data / 'train.jsonl'}\n", "  dataset: mini\n")
    recipe.write_text(text.replace(f"  validation: {tiny_data / 'validation.jsonl'}\n", ""))
    assert "dataset: mini" in recipe.read_text() and str(tiny_data) not in recipe.read_text()
    monkeypatch.setenv("EDGEBERT_DATASETS", str(first_root))
    run_dir = tmp_path / "machine-a" / "run"
    code, _, err = run_cli("run", recipe, "--run-dir", run_dir, "--until", "finetune")
    assert code == 0, err
    state = json.loads((run_dir / "state.json").read_text())
    assert not Path(state["last_model"]).is_absolute()
    assert all(not Path(key).is_absolute() for key in _manifest(run_dir)["data_sha256"])
    second_root = tmp_path / "machine-b" / "datasets"
    shutil.move(first_root, second_root)
    moved = tmp_path / "machine-b" / "run"
    shutil.move(run_dir, moved)
    monkeypatch.setenv("EDGEBERT_DATASETS", str(second_root))
    code, _, err = run_cli("run", "--resume", moved)
    assert code == 0, err
    assert _manifest(moved)["status"] == "completed"
    assert list(json.loads((moved / "metrics.json").read_text())) == ["finetune", "student"]


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_swaps_survive_leftovers_of_a_killed_writer_with_the_same_pid(tmp_path, monkeypatch):
    """In a container every start has the same pid: a leftover `.NAME.old-<pid>` from a killed
    run must not make the next swap fail; stale `.new-*` and `.old-*` folders are cleaned; the
    folder holding a swapped directory is fsynced, so the rename survives a power cut."""
    real_fsync, synced = os.fsync, []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "model"
    target.mkdir()
    (target / "v").write_text("1")
    leftover = tmp_path / f".model.old-{os.getpid()}"
    leftover.mkdir()
    (leftover / "v").write_text("0")
    new = staging_dir(target)
    write_text_atomic(new / "v", "2")
    replace_dir_atomic(new, target)
    assert (target / "v").read_text() == "2"
    assert str(tmp_path) in synced  # the parent folder, after the rename
    half_written = staging_dir(target)
    (half_written / "junk").write_text("x")
    clean_stale_swaps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (target / "v").read_text() == "2"


def test_a_planted_lock_link_is_refused_and_its_target_kept(tmp_path):
    from bench.errors import BenchError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".edgebert.lock").symlink_to(victim)
    with pytest.raises(BenchError, match="is a symbolic link: refusing to write through it"):
        FolderLock(folder, "run").acquire()
    assert victim.read_text() == "precious"

"""The run directory and atomic directory swaps (file writes: `bench.files`).

Layout of `runs/<name>-<timestamp>/`:
    recipe.resolved.yaml   the validated recipe with every default filled in
    manifest.json          versions, seed, data hashes, git commit, machine, status
    metrics.json           one entry per stage
    run.log                what the console showed
    stages/NN-<name>/      each stage's metrics.json, model/ (safetensors), ONNX files, reports
    .edgebert.lock         the writer's pid; flock-held while a run (or resume) is writing
Every file is written to a temporary name and renamed, so a crash never leaves a half-written
file that a later step would load.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.files import FolderLock, current_umask, write_json_atomic
from compress.errors import EdgebertError


def replace_dir_atomic(tmp_dir: Path, target: Path) -> None:
    """Swap a fully written directory into place; the old one is removed only afterwards."""
    os.chmod(tmp_dir, 0o777 & ~current_umask())
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp_dir, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_replaced_dir(target: Path) -> None:
    """Undo a swap that a kill interrupted between its two renames: put the old copy back.

    `replace_dir_atomic` moves the old directory aside before moving the new one in; a SIGKILL
    between the two leaves only `.<name>.old-<pid>`, which is complete and is restored here.
    """
    if target.exists():
        return
    leftovers = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if leftovers:
        os.replace(leftovers[-1], target)


class RunDir:
    """One run's directory; all stage outputs go below it."""

    def __init__(self, root: Path):
        self.root = root
        self._lock: FolderLock | None = None

    def lock(self) -> None:
        """Hold the run directory for this process (a second `run --resume` is refused)."""
        self._lock = FolderLock(self.root, "run").acquire()

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @classmethod
    def create(cls, base: Path, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root = base / f"{name}-{stamp}"
        suffix = 1
        while root.exists():
            suffix += 1
            root = base / f"{name}-{stamp}-{suffix}"
        try:
            root.mkdir(parents=True)
        except OSError as exc:
            raise EdgebertError(f"cannot create run directory {root}: {exc.strerror}") from None
        return cls(root)

    def stage_dir(self, index: int, name: str) -> Path:
        path = self.root / "stages" / f"{index:02d}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, relative: str | Path, obj: Any) -> Path:
        """Write below the run (`relative` may also be a path inside it, e.g. a stage folder's,
        also when the run directory itself was given as a relative path)."""
        path = Path(relative)
        if not path.is_relative_to(self.root):
            path = self.root / path
        write_json_atomic(path, obj)
        return path

    def log(self, line: str) -> None:
        with (self.root / "run.log").open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {line}\n")

"""The run directory (atomic file writes and directory swaps: `bench.files`).

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

import time
from pathlib import Path
from typing import Any

from bench.files import FolderLock, append_text, write_json_atomic
from compress.errors import EdgebertError


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
        append_text(self.root / "run.log", f"{time.strftime('%H:%M:%S')} {line}\n")

"""Small helpers every edgebert package shares, kept at the lowest layer (`export` and
`compress` import `bench`; `bench` imports neither): atomic file writes, the one-line form of an
exception for error messages, and the model metadata file `edgebert.json`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import BenchError

META_FILE = "edgebert.json"  # beside a model's weights or ONNX file: cleaning, max length, labels


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for a one-line error: its first line, cut at `limit`."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def is_disk_full(exc: BaseException) -> bool:
    """Whether a failed write ran out of space (or quota). Libraries that write themselves
    (safetensors, ONNX exporters) wrap the OS error in their own type, so its text counts too."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "os error 28" in str(exc)


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def replace_file(staged: Path | str, target: Path | str) -> None:
    """Move a fully written file over `target` in one rename, with the umask's permissions
    (temporary files are private): readers see the old file or the new one, never half."""
    os.chmod(staged, 0o666 & ~current_umask())
    os.replace(staged, target)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        replace_file(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_model_meta(folder: Path) -> dict:
    """A model folder's `edgebert.json` ({} when there is none); one-line error if damaged."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: unreadable ({first_line(exc)})") from None
    if not isinstance(meta, dict):
        raise BenchError(f"{path}: expected a JSON object")
    return meta


def read_classifier_meta(folder: Path) -> dict:
    """edgebert.json, with the label names from config.json's id2label when it has none, the
    cleaning steps (none) and max length (128) filled in: what a server or a web page
    that tokenizes by itself reads."""
    meta = read_model_meta(folder)
    config = folder / "config.json"
    if not meta.get("labels") and config.is_file():
        id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label") or {}
        meta["labels"] = [id2label[k] for k in sorted(id2label, key=int)]
    return {"clean": [], "max_length": 128} | meta


def write_model_meta(folder: Path, meta: dict) -> Path:
    """The one writer of `edgebert.json` (training stages and QAT's ONNX folder use it)."""
    path = Path(folder) / META_FILE
    write_json_atomic(path, meta)
    return path


def read_lines(path: Path, missing: str = "file not found") -> list[str]:
    """A UTF-8 text file's lines, or a one-line error that names the file."""
    if not path.is_file():
        raise BenchError(f"{missing}: {path}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not UTF-8 text (byte {exc.start})") from None


LOCK_FILE = ".edgebert.lock"


class FolderLock:
    """An exclusive lock on a folder that one edgebert process writes (a run directory, an
    export folder): a second writer gets a one-line error instead of interleaving its files with
    the first one's. `flock` on FOLDER/.edgebert.lock: the kernel drops it when the holder
    exits, even on SIGKILL, so a dead run never leaves a stale lock behind."""

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BenchError(
                f"{self.folder} is in use by another edgebert {self.what} (pid {holder}); "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

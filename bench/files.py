"""Small helpers every edgebert package shares, kept at the lowest layer (`export` and
`compress` import `bench`; `bench` imports neither): atomic file writes, the one-line form of an
exception for error messages, folder locks (the model file `edgebert.json`: `bench.model_file`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import BenchError


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


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable: without it a power cut can undo the rename even
    though the file's own bytes were synced."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_dir(target: Path) -> Path:
    """A fresh private folder beside `target` to write a new version into (`.NAME.new-XXXX`);
    `replace_dir_atomic` swaps it in, `clean_stale_swaps` removes it if its writer died."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))


def replace_dir_atomic(tmp_dir: Path, target: Path) -> None:
    """Swap a fully written directory into place; the old one is removed only afterwards.
    The old copy's name is unique (`mkdtemp`), not the pid: in a container every start has the
    same pid, and a leftover from a killed run must not collide with the next swap."""
    os.chmod(tmp_dir, 0o777 & ~current_umask())
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old)  # a directory renames over an empty one
    os.replace(tmp_dir, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_replaced_dir(target: Path) -> None:
    """Undo a swap that a kill interrupted between its two renames: put the old copy back.

    `replace_dir_atomic` moves the old directory aside before moving the new one in; a SIGKILL
    between the two leaves only `.<name>.old-*`, which is complete and is restored here. Other
    leftovers of dead swaps (older copies, half-written `.new-*` folders) are removed."""
    leftovers = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if leftovers and not target.exists():
        os.replace(leftovers.pop(), target)
        fsync_dir(target.parent)
    for stale in leftovers + list(target.parent.glob(f".{target.name}.new-*")):
        shutil.rmtree(stale, ignore_errors=True)


def clean_stale_swaps(root: Path) -> None:
    """Finish or discard every directory swap a killed writer left below `root` (call it while
    holding the folder's lock, so no live writer's `.new-*` folder is taken)."""
    for old in list(root.rglob(".*.old-*")):
        name = old.name[1:].rsplit(".old-", 1)[0]
        if old.is_dir() and not old.is_symlink():
            recover_replaced_dir(old.parent / name)
    for new in list(root.rglob(".*.new-*")):
        if new.is_dir() and not new.is_symlink():
            shutil.rmtree(new, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        replace_file(tmp, path)  # a rename replaces a planted symlink, never writes through it
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_lines(path: Path, missing: str = "file not found") -> list[str]:
    """A UTF-8 text file's lines, or a one-line error that names the file."""
    if not path.is_file():
        raise BenchError(f"{missing}: {path}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not UTF-8 text (byte {exc.start})") from None


LOCK_FILE = ".edgebert.lock"


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """`os.open` that refuses a symbolic link at `path` (a planted link to another file must
    not make us truncate or append to that file): a one-line error instead."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BenchError(f"{path} is a symbolic link: refusing to write through it") from None
        raise


def append_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Append to a log file, creating it with `mode`, never through a symbolic link."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(text)


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
        fd = open_no_follow(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
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

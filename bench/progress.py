"""Progress a person can read in a log file: one line every ~30 s and when a phase ends.

A rich progress bar redraws one terminal line and shows nothing in `run.log`, under `nohup`, or
through `tee`. `ProgressLine` writes plain lines instead (stage, step/total, rate, ETA, and any
other fields), so a long epoch is visible wherever its output goes.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Callable, Iterator

INTERVAL_SECONDS = 30.0


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def to_stderr_unless_terminal(line: str) -> None:
    """Progress lines for logs: a terminal already shows a live bar."""
    if not stderr_is_terminal():
        print(line, file=sys.stderr, flush=True)


def clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """`update(done)` emits `label done/total unit, fields..., rate, ETA` at most every
    `interval` seconds; `force=True` (end of an epoch or a phase) emits at once."""

    def __init__(
        self,
        label: str,
        total: int,
        emit: Callable[[str], None],
        unit: str = "steps",
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        done_at_start: int = 0,
    ):
        self.label, self.total, self.emit, self.unit = label, total, emit, unit
        self.interval, self.clock = interval, clock
        self.started = self.last = clock()
        self.done_at_start = done_at_start

    def update(self, done: int, force: bool = False, **fields: str) -> None:
        now = self.clock()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        self.emit(self.line(done, now, fields))

    def line(self, done: int, now: float, fields: dict[str, str]) -> str:
        elapsed = now - self.started
        progressed = done - self.done_at_start
        parts = [f"{self.label} {done}/{self.total} {self.unit}"]
        parts += [f"{key} {value}" for key, value in fields.items()]
        if progressed > 0 and elapsed > 0:
            eta = (self.total - done) * elapsed / progressed
            parts.append(f"elapsed {clock_text(elapsed)} ETA {clock_text(eta)}")
        return "  ".join(parts)


@contextlib.contextmanager
def library_bars_silenced() -> Iterator[None]:
    """Libraries that draw tqdm bars (model2vec) write one redraw per step into a log file;
    their stderr is swallowed while they run (tqdm reads TQDM_DISABLE only when imported)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield

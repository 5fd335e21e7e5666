"""What the training loop carries from step to step, and how Ctrl-C / SIGTERM reach it.

`LoopState` is every counter of one training run in one place: a checkpoint's `state.json` is
exactly `LoopState.counters()`, and a resumed run is `LoopState.from_counters(...)`, so the saved
keys and the restored ones can never drift apart.
"""

from __future__ import annotations

import _thread
import copy
import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, fields


@dataclass
class BestEpoch:
    """The best epoch so far by the selection metric: its score, number and weights, and how
    many epochs have passed without beating it (what early stopping counts)."""

    score: float = -math.inf
    epoch: int = 0
    stale: int = 0
    weights: dict | None = field(default=None, repr=False)

    def reset(self) -> None:
        """Earlier epochs stop being comparable (the model was reshaped or quantized)."""
        self.score, self.epoch, self.stale, self.weights = -math.inf, 0, 0, None

    def offer(self, epoch: int, score: float, model) -> None:
        """Keep `model`'s weights if `score` beats the best; otherwise count a stale epoch."""
        if score > self.score:
            self.score, self.epoch, self.stale = score, epoch, 0
            self.weights = copy.deepcopy(model.state_dict())
        else:
            self.stale += 1


@dataclass
class LoopState:
    """Counters of one training run (the best epoch's weights travel beside them)."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # the epoch in progress, or the last one run
    batches_done: int = 0  # micro-batches of `epoch` already consumed
    epoch_done: bool = False  # `epoch` finished, evaluation and epoch-end work included
    running_loss: float = 0.0  # exponential moving average for the log
    seen: int = 0  # training rows consumed, for rows/s
    finished: bool = False  # max steps reached or stopped early: nothing left to train
    history: list[dict] = field(default_factory=list)  # one row of metrics per epoch
    best: BestEpoch = field(default_factory=BestEpoch)

    def counters(self) -> dict:
        """JSON-ready counters (what `state.json` holds)."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best"}
        return plain | {
            "best_score": self.best.score,
            "best_epoch": self.best.epoch,
            "stale": self.best.stale,
        }

    @classmethod
    def from_counters(cls, counters: dict, best_weights: dict | None) -> LoopState:
        best = BestEpoch(
            counters["best_score"], counters["best_epoch"], counters["stale"], best_weights
        )
        names = {f.name for f in fields(cls)} - {"best"}
        return cls(**{k: counters[k] for k in names if k in counters}, best=best)

    def track_loss(self, value: float, rows: int) -> None:
        self.running_loss = (
            value if self.running_loss == 0.0 else 0.9 * self.running_loss + 0.1 * value
        )
        self.seen += rows


class InterruptFlag:
    """Turns Ctrl-C (SIGINT) and a polite kill (SIGTERM, from `kill`, systemd, a container
    platform or a batch scheduler) into a prompt, clean stop, wherever the run is.

    The first signal sets `flag`: the training loop checks it after each optimiser step and
    leaves with a checkpoint. Work that never looks at the flag (evaluation, teacher logits,
    export, bench, a long step) is stopped `grace` seconds later: a watchdog raises
    KeyboardInterrupt in the main thread, and the loop saves the checkpoint of its last complete
    step on the way out. A second signal does the same at once. Neither lands inside a
    `critical()` section (an optimiser step, a checkpoint write): there it waits for the
    section's end, so no state is ever half-updated. Platforms SIGKILL 30 s after SIGTERM; a
    run exits within about `grace` plus one checkpoint write.

    One instance serves the whole process (`INTERRUPTS`): entering it again (the engine, then a
    training loop inside it) nests, so a signal that came between stages is still seen.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace: float = 5.0):
        self.grace = grace
        self.flag = False
        self._depth = 0
        self._critical = 0
        self._raise_after_critical = False
        self._previous: dict = {}
        self._watchdog: threading.Timer | None = None

    def __enter__(self):
        self._depth += 1
        if self._depth == 1:
            self.flag = False
            for signum in self.SIGNALS:
                try:
                    self._previous[signum] = signal.signal(signum, self._handle)
                except ValueError:  # not the main thread: leave signals alone
                    break
        return self

    def _handle(self, signum, frame):
        """Runs in the main thread (Python delivers signals there)."""
        if not self.flag:
            self.flag = True
            self._watchdog = threading.Timer(self.grace, _thread.interrupt_main)
            self._watchdog.daemon = True
            self._watchdog.start()
            return
        if self._critical:
            self._raise_after_critical = True
            return
        raise KeyboardInterrupt

    def stand_down(self) -> None:
        """The loop saw the flag and is leaving in order: no forced stop needed."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    @contextmanager
    def critical(self):
        """A section an interruption must not split; a stop asked for inside it comes after."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if not self._critical and self._raise_after_critical:
            self._raise_after_critical = False
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self._previous = {}
            self.stand_down()
        return False


INTERRUPTS = InterruptFlag()  # the process's one signal watcher (see InterruptFlag)

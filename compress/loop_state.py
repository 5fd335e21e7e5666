"""What the training loop carries from step to step, and how Ctrl-C / SIGTERM reach it.

`LoopState` is every counter of one training run in one place: a checkpoint's `state.json` is
exactly `LoopState.counters()`, and a resumed run is `LoopState.from_counters(...)`, so the saved
keys and the restored ones can never drift apart.
"""

from __future__ import annotations

import copy
import math
import signal
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
    """Turns Ctrl-C (SIGINT) and a polite kill (SIGTERM, as from `kill`, systemd or a batch
    scheduler) into a flag the loop checks after each optimiser step, so the checkpoint written
    on the way out is consistent (never mid-backward)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.flag = False
        self._previous: dict = {}

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def _handle(self, signum, frame):
        if self.flag:  # second signal: stop now
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        return False

"""What a modifier sees of the training loop it acts in: `TrainingState`, a typed view.

The loop (`compress.training.loop.TrainingPhase`) has many fields; a modifier may read only
these, and ask things of the loop only through the four request methods at the end. The hooks
are typed with this Protocol, and `tests/test_architecture.py` fails when a modifier (or a helper
it calls with the state) reaches for anything not declared here, or when the loop stops
providing one of them: the contract is this file, not the loop's internals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch

from bench.progress import ProgressLine

if TYPE_CHECKING:
    from compress.engine.config import TrainingConfig
    from compress.engine.context import StageScope


class TrainingState(Protocol):
    """The state a modifier's hooks receive (`setup`, `loss`, `on_step`, `on_epoch_end`...)."""

    # What is trained, on what, and how.
    model: torch.nn.Module  # replaced in place when pruning reshapes it
    tokenizer: Any  # the student's tokenizer
    training: TrainingConfig  # the stage's `training:` block
    scope: StageScope | None  # the run, the stage's name and folder (None in bare tests)
    label_names: list[str]
    max_length: int
    pad_id: int
    train_texts: list[str]  # labelled rows first, then a distillation transfer set
    train_ids: list[list[int]]
    eval_texts: list[str]
    eval_ids: list[list[int]]
    eval_labels: list[int]
    # Where the loop is.
    steps_per_epoch: int
    total_steps: int

    @property
    def step(self) -> int: ...  # optimiser steps done

    @property
    def epoch(self) -> int: ...  # the epoch in progress (1-based)

    def log(self, line: str) -> None: ...

    def progress(self, what: str, total: int, unit: str, done: int = 0) -> ProgressLine: ...

    def leading_batches(self, count: int) -> Iterator[dict]: ...

    def row_weights(
        self, batch: dict, predicted: torch.Tensor | None = None
    ) -> torch.Tensor | None: ...

    # The only ways to ask something of the loop.
    def request_outputs(self, **flags: bool) -> None: ...

    def add_trained_parameters(self, parameters) -> None: ...

    def model_reshaped(self) -> None: ...

    def model_changed(self) -> None: ...

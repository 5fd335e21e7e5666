"""Lifecycle of the objects a recipe is made of.

A `Stage` is one entry of `stages:`; the engine calls `setup`, `run`, `finish` in turn. A
`Modifier` is one entry of a training stage's `with:` list; the training loop calls its hooks so
that several modifiers (distillation, pruning, QAT) act together in one run:

| hook                              | when                                  |
|-----------------------------------|---------------------------------------|
| `setup(phase)`                    | before the first step                 |
| `loss(phase, batch, outputs, l)`  | each step; returns the loss to use    |
| `on_step(phase)`                  | after each optimiser step             |
| `on_epoch_end(phase, metrics)`    | after each evaluation                 |
| `finish(phase)`                   | after training, before saving         |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from compress.recipe import StageConfig

if TYPE_CHECKING:
    from compress.context import RunContext
    from compress.training import TrainingPhase


class Stage:
    """One step of a recipe. Subclasses set `type_name` and `Config` and override hooks."""

    type_name: ClassVar[str]
    Config: ClassVar[type[StageConfig]]

    def __init__(self, config: Any, index: int):
        self.config = config
        self.index = index

    @property
    def name(self) -> str:
        return self.config.name or self.config.type

    @classmethod
    def check_position(cls, config: Any, previous: list, index: int) -> None:
        """Raise ValueError when this stage cannot run after `previous`."""

    def setup(self, ctx: "RunContext") -> None:
        """Prepare inputs (load a model, build a graph)."""

    def run(self, ctx: "RunContext") -> dict:
        """Do the work; return the metrics to record for this stage."""
        return {}

    def finish(self, ctx: "RunContext") -> None:
        """Publish outputs (register the produced model for `@name` references)."""


class Modifier:
    """Acts inside one training phase through the hooks in the module docstring."""

    type_name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any):
        self.config = config

    def setup(self, phase: "TrainingPhase") -> None:
        pass

    def loss(
        self, phase: "TrainingPhase", batch: dict, outputs: Any, loss: torch.Tensor
    ) -> torch.Tensor:
        return loss

    def on_step(self, phase: "TrainingPhase") -> None:
        pass

    def on_epoch_end(self, phase: "TrainingPhase", metrics: dict) -> None:
        pass

    def finish(self, phase: "TrainingPhase") -> dict:
        """Return metrics worth recording (e.g. sparsity reached)."""
        return {}

    def state_dict(self) -> dict:
        """What a resumed run needs to continue (tensors and plain values only)."""
        return {}

    def load_state_dict(self, phase: "TrainingPhase", state: dict) -> None:
        """Restore `state_dict()` output; called before the model's weights are restored, so
        a modifier that reshapes the model (pruning) can reshape it first."""

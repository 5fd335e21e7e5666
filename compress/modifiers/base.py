"""The modifier contract: objects that act inside one training loop through its hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from compress.training import TrainingPhase


class Modifier:
    """Acts inside one training phase through the hooks in the module docstring."""

    type_name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any):
        self.config = config

    def setup(self, phase: TrainingPhase) -> None:
        pass

    def loss(
        self, phase: TrainingPhase, batch: dict, outputs: Any, loss: torch.Tensor
    ) -> torch.Tensor:
        return loss

    def on_step(self, phase: TrainingPhase) -> None:
        pass

    def on_epoch_end(self, phase: TrainingPhase, metrics: dict) -> None:
        pass

    def finish(self, phase: TrainingPhase) -> dict:
        """Return metrics worth recording (e.g. sparsity reached)."""
        return {}

    def state_dict(self) -> dict:
        """What a resumed run needs to continue (tensors and plain values only)."""
        return {}

    def load_state_dict(self, phase: TrainingPhase, state: dict) -> None:
        """Restore `state_dict()` output; called before the model's weights are restored, so
        a modifier that reshapes the model (pruning) can reshape it first."""

"""The modifier contract: objects that act inside one training loop through its hooks.

A modifier is one entry of a training stage's `with:` list; the loop (`compress.training.loop`) calls
its hooks so that several modifiers (distillation, pruning, QAT) act together in one run:

| hook                              | when                                  |
|-----------------------------------|---------------------------------------|
| `transfer_texts(ctx)`             | stage setup, before the vocabulary    |
| `setup(phase)`                    | before the first step                 |
| `loss(phase, batch, outputs, l)`  | each step; returns the loss to use    |
| `on_step(phase)`                  | after each optimiser step             |
| `on_epoch_end(phase, metrics)`    | after each evaluation                 |
| `finish(phase)`                   | after training, before saving         |
| `state_dict()` / `load_state_dict(phase, state)` | checkpoint and resume  |

Each hook receives the loop's state typed as `compress.modifiers.state.TrainingState`: the
fields a modifier may read, and the request methods it may call. A modifier asks things of the
loop only through those request methods:
`request_outputs(**flags)` (e.g. hidden states for distillation), `add_trained_parameters(...)`
(projections the optimiser must train), `model_reshaped()` (modules replaced: the optimiser is
rebuilt and best-epoch selection restarts) and `model_changed()` (the model now computes
differently: this epoch is no best-epoch candidate). It reads the stage it acts in from
`phase.scope` (`compress.engine.context.StageScope`: the run, the stage's name and folder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from compress.modifiers.state import TrainingState

if TYPE_CHECKING:
    from compress.engine.context import RunContext


class Modifier:
    """Acts inside one training phase through the hooks in the module docstring."""

    type_name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any):
        self.config = config

    def transfer_texts(self, ctx: RunContext) -> list[str]:
        """Unlabeled texts the stage trains on besides its train split (a distillation
        transfer set): they join the vocabulary corpus and the loader, with no label."""
        return []

    def setup(self, phase: TrainingState) -> None:
        pass

    def loss(
        self, phase: TrainingState, batch: dict, outputs: Any, loss: torch.Tensor
    ) -> torch.Tensor:
        return loss

    def on_step(self, phase: TrainingState) -> None:
        pass

    def on_epoch_end(self, phase: TrainingState, metrics: dict) -> None:
        pass

    def finish(self, phase: TrainingState) -> dict:
        """Return metrics worth recording (e.g. sparsity reached)."""
        return {}

    def state_dict(self) -> dict:
        """What a resumed run needs to continue (tensors and plain values only)."""
        return {}

    def load_state_dict(self, phase: TrainingState, state: dict) -> None:
        """Restore `state_dict()` output; called before the model's weights are restored, so
        a modifier that reshapes the model (pruning) can reshape it first."""

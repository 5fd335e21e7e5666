"""Pruning importance criteria: one small class per criterion, as Torch-Pruning's `Importance`.

An importance scores every element of a weight tensor (higher = keep). `score_structures` sums
those scores over the weights of each attention head and each FFN neuron, so a new criterion
is a new class in `IMPORTANCES` and nothing else changes. A channel shared by a whole coupled
group (the hidden width) is scored by the criterion's Torch-Pruning group importance, which
knows how each member of a dependency group maps onto the channel.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch_pruning as tp

from compress.models.structure import attention_parts, encoder_layers, ffn_parts


class Importance:
    """Scores weights element-wise; `prepare`/`release` bracket the scoring of one model."""

    name: ClassVar[str]

    def prepare(self, phase, batches: int) -> None:
        """Before any weight is scored (a gradient criterion runs its batches here)."""

    def release(self, phase) -> None:
        """After scoring: leave the model as it was."""

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def group_importance(self) -> tp.importance.Importance:
        """The same criterion over a Torch-Pruning group: one summed score per channel."""
        raise NotImplementedError


class MagnitudeImportance(Importance):
    """|w|: no data needed; the classic baseline."""

    name = "magnitude"

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().abs()

    def group_importance(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None)


class TaylorImportance(Importance):
    """|w * dL/dw| over a few training batches: the loss change if the weight were removed
    (first-order Taylor), measured without dropout so it is a property of the weights."""

    name = "taylor"

    def prepare(self, phase, batches: int) -> None:
        model = phase.model
        was_training = model.training
        model.eval()
        model.zero_grad(set_to_none=True)
        for batch in phase.leading_batches(batches):
            model(**batch).loss.backward()
        model.train(was_training)

    def release(self, phase) -> None:
        phase.model.zero_grad(set_to_none=True)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
        return (weight.detach() * grad).abs()

    def group_importance(self) -> tp.importance.Importance:
        return tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)


IMPORTANCES: dict[str, type[Importance]] = {
    cls.name: cls for cls in (TaylorImportance, MagnitudeImportance)
}
ImportanceName = Literal[tuple(IMPORTANCES)]  # type: ignore[valid-type]


def _head_scores(layer, score: Importance) -> torch.Tensor:
    inner, out_proj = attention_parts(layer)
    heads, size = inner.num_attention_heads, inner.attention_head_size
    total = torch.zeros(heads, device=out_proj.weight.device)
    for name in ("query", "key", "value", "q", "k", "v"):
        linear = getattr(inner, name, None)
        if linear is not None:
            total += score(linear.weight).view(heads, size, -1).sum((1, 2))
            total += score(linear.bias).view(heads, size).sum(1)
    total += score(out_proj.weight).view(out_proj.weight.shape[0], heads, size).sum((0, 2))
    return total.cpu()


def _neuron_scores(layer, score: Importance) -> torch.Tensor:
    up, down = ffn_parts(layer)
    return (score(up.weight).sum(1) + score(up.bias) + score(down.weight).sum(0)).cpu()


def score_structures(
    phase, importance: Importance, batches: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: a score per remaining head and per FFN neuron (higher = keep)."""
    importance.prepare(phase, batches)
    try:
        layers = encoder_layers(phase.model)
        return (
            [_head_scores(layer, importance) for layer in layers],
            [_neuron_scores(layer, importance) for layer in layers],
        )
    finally:
        importance.release(phase)

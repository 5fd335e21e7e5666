"""Self-attention relation distillation (MiniLMv2, Wang et al. 2021).

For one layer of each model, the query, key and value vectors of every token are cut into the
same number of *relation heads* (not attention heads), and each relation head gives a
token-by-token matrix softmax(X X^T / sqrt(d)). The student learns to match the teacher's
Q-Q, K-K and V-V matrices (KL per query row). Because the matrices are [tokens x tokens]
whatever the widths, teacher and student need not share width or head count, and the loss
keeps working while heads are pruned away (the query width shrinks; the relation heads just
get narrower). Only the token positions must correspond (same tokenization).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.errors import EdgebertError
from compress.models.structure import attention_parts, encoder_layers

KINDS = ("query", "key", "value")
# Projection names per architecture: BERT/RoBERTa/XLM-R (query, key, value), MPNet (q, k, v).
PROJECTION_NAMES = {"query": ("query", "q"), "key": ("key", "k"), "value": ("value", "v")}


def layer_index(model, layer: int) -> int:
    """`layer` (negative counts from the end) as an index into the model's encoder layers; a
    layer the model does not have is an error, never a silent wrap-around."""
    count = len(encoder_layers(model))
    if not -count <= layer < count:
        raise EdgebertError(
            f"distill.relations: layer {layer} is outside the model's {count} layers"
        )
    return layer % count


def projections(model, index: int) -> dict[str, torch.nn.Module]:
    """The query/key/value projections of encoder layer `index` (from `layer_index`).

    Looked up at every call, not cached: pruning and QAT replace these modules."""
    inner, _ = attention_parts(encoder_layers(model)[index])
    found = {}
    for kind, names in PROJECTION_NAMES.items():
        module = next((getattr(inner, n) for n in names if hasattr(inner, n)), None)
        if module is None:
            raise EdgebertError(
                f"distill.relations: {type(inner).__name__} has no {kind} projection"
            )
        found[kind] = module
    return found


def relation_logits(vectors: torch.Tensor, heads: int, key_mask: torch.Tensor) -> torch.Tensor:
    """Scaled dot products per relation head: [B, heads, L, L], padded keys at -inf.

    `vectors` is [B, L, W]; W is cut into `heads` nearly equal slices, so any width works."""
    slices = torch.tensor_split(vectors.float(), heads, dim=-1)
    scores = torch.stack(
        [s @ s.transpose(-1, -2) / max(s.shape[-1], 1) ** 0.5 for s in slices], dim=1
    )
    return scores.masked_fill(~key_mask[:, None, None, :].bool(), float("-inf"))


def relation_kl(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, heads: int
) -> torch.Tensor:
    """KL(teacher relations || student relations), averaged over heads and real query rows."""
    log_s = F.log_softmax(relation_logits(student, heads, mask), dim=-1)
    log_t = F.log_softmax(relation_logits(teacher, heads, mask), dim=-1)
    pointwise = log_t.exp() * (log_t - log_s)
    kl = torch.nan_to_num(pointwise, nan=0.0).sum(-1)  # [B, heads, L]; -inf - -inf at pads
    weights = mask[:, None, :].float().expand_as(kl)
    return (kl * weights).sum() / weights.sum().clamp(min=1)


def layer_relations(model, hidden_states, layer: int) -> dict[str, torch.Tensor]:
    """Q, K and V of encoder layer `layer`, recomputed from that layer's input hidden states
    (`hidden_states[i]` is layer i's input), so no forward hooks have to survive pruning."""
    index = layer_index(model, layer)
    layer_input = hidden_states[index]
    return {kind: module(layer_input) for kind, module in projections(model, index).items()}

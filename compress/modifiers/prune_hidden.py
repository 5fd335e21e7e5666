"""Hidden-width pruning: a narrower residual stream for a BERT student.

The residual width couples almost every weight of a BERT: the three embeddings and their
LayerNorm, each block's Q/K/V inputs, attention and FFN outputs and their LayerNorms, the
pooler's input and the classifier (both halves of a `cls_mean` head's concatenation).
Torch-Pruning's dependency graph finds that group from the word embedding and cuts it in one go;
its group importances score each width channel over the whole group.

HF's BERT derives the head size from `hidden_size / num_attention_heads` when it loads a
config, so a narrower stream alone would not reload. The head size is therefore cut with it:
every head keeps its `hidden / heads` most important query/key dimensions (the same ones in Q
and K, whose dot product pairs them) and value dimensions (with the output projection's matching
inputs). BERT's pooler (hidden -> hidden) is cut to the same width. The saved config states the
new `hidden_size`, and `from_pretrained` rebuilds exactly this model.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from compress.errors import EdgebertError
from compress.models.structure import attention_parts, dependency_graph, encoder_layers


def check_prunable_width(model) -> None:
    """Only BERT's loader derives every width from config.hidden_size the way this cut keeps."""
    if model.config.model_type != "bert":
        raise EdgebertError(
            f"prune_structured.hidden: hidden-width pruning supports BERT models, "
            f"not {model.config.model_type}"
        )


def kept_width(width: int, heads: int, fraction_removed: float) -> int:
    """The width left after removing `fraction_removed` of `width`: a multiple of the head
    count (so the head size stays whole), at least one dimension per head."""
    return heads * max(1, round(width * (1 - fraction_removed) / heads))


class WidthCut:
    """Scores and cuts one model's residual width on a single traced dependency graph (tracing
    is the slow part; Torch-Pruning's own pruners also keep one graph across their cuts)."""

    def __init__(self, model) -> None:
        check_prunable_width(model)
        self.model = model
        self.graph = dependency_graph(model)

    def _group(self, module, prune_fn, idxs: list[int]):
        """Torch-Pruning's group of everything coupled to `module`'s channels `idxs`."""
        return self.graph.get_pruning_group(module, prune_fn, idxs=idxs)

    def _width_group(self, idxs: list[int]):
        embedding = self.model.base_model.embeddings.word_embeddings
        return self._group(embedding, tp.prune_embedding_out_channels, idxs)

    def scores(self, group_importance) -> torch.Tensor:
        """One score per residual channel (higher = keep), summed over the whole coupled group."""
        group = self._width_group(list(range(self.model.config.hidden_size)))
        return group_importance(group).detach().cpu()

    def cut(self, scores: torch.Tensor, keep: int, dim_score) -> None:
        """Keep the `keep` best residual channels and cut every head to `keep / heads`
        dimensions (`dim_score(weight)` scores a weight element-wise, as
        `compress.modifiers.importance`)."""
        model = self.model
        hidden = model.config.hidden_size
        if keep >= hidden:
            return
        self._width_group(torch.argsort(scores)[: hidden - keep].tolist()).prune()
        pooler = getattr(model.base_model, "pooler", None)
        if pooler is not None:  # hidden -> hidden: its outputs are not the residual stream
            pooler_drop = torch.argsort(dim_score(pooler.dense.weight).sum(1))[: hidden - keep]
            self._group(pooler.dense, tp.prune_linear_out_channels, pooler_drop.tolist()).prune()
        head_size = keep // model.config.num_attention_heads
        for layer in encoder_layers(model):
            _cut_head_size(layer, head_size, dim_score)
        model.config.hidden_size = keep


def _cut_head_size(layer, head_size: int, dim_score) -> None:
    """Every head of `layer` keeps its `head_size` best query/key and value dimensions."""
    inner, out_proj = attention_parts(layer)
    heads, size = inner.num_attention_heads, inner.attention_head_size
    if head_size >= size:
        return
    qk = dim_score(inner.query.weight).sum(1) + dim_score(inner.key.weight).sum(1)
    v = dim_score(inner.value.weight).sum(1) + dim_score(out_proj.weight).sum(0)
    qk_drop, v_drop = (
        _lowest_per_head(qk, heads, size - head_size),
        _lowest_per_head(v, heads, size - head_size),
    )
    tp.prune_linear_out_channels(inner.query, qk_drop)
    tp.prune_linear_out_channels(inner.key, qk_drop)
    tp.prune_linear_out_channels(inner.value, v_drop)
    tp.prune_linear_in_channels(out_proj, v_drop)
    inner.attention_head_size = head_size
    inner.all_head_size = heads * head_size


def _lowest_per_head(scores: torch.Tensor, heads: int, remove: int) -> list[int]:
    """Indices (into heads x size) of the `remove` lowest-scoring dimensions of every head."""
    size = scores.numel() // heads
    per_head = torch.argsort(scores.view(heads, size), dim=1)[:, :remove]
    offsets = torch.arange(heads).unsqueeze(1) * size
    return sorted((per_head + offsets).flatten().tolist())


def shrink_width_to(model, size: int) -> None:
    """Give a fresh model the width `size` (for resuming: weights are loaded right after)."""
    if size < model.config.hidden_size:
        first_kept = torch.arange(model.config.hidden_size, 0, -1, dtype=torch.float)
        WidthCut(model).cut(first_kept, size, torch.zeros_like)

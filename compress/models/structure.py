"""The structure of a BERT-family classifier: where its layers, attention and FFN live.

Pruning, layer dropping and relation distillation all walk the same modules; this is the one
place that knows their names across BERT, RoBERTa, MPNet and XLM-R, so none of them imports
another's modifier to find them.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from compress.errors import EdgebertError


def encoder_layers(model) -> torch.nn.ModuleList:
    """The transformer blocks of a BERT-family classifier (BERT, RoBERTa, MPNet, XLM-R...)."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise EdgebertError(
            f"{type(model).__name__}: pruning and layer dropping need an encoder.layer stack"
        )
    return layers


def attention_parts(layer):
    """(self-attention module with query/key/value, output projection Linear)."""
    attention = layer.attention
    inner = getattr(attention, "self", None) or getattr(attention, "attn", None)
    output = getattr(getattr(attention, "output", None), "dense", None) or getattr(inner, "o", None)
    return inner, output


def ffn_parts(layer) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """(FFN up projection, FFN down projection) of one transformer block."""
    return layer.intermediate.dense, layer.output.dense


def heads_per_layer(model) -> list[int]:
    """Attention heads left in each layer (after head pruning they differ)."""
    return [attention_parts(layer)[0].num_attention_heads for layer in encoder_layers(model)]


def count_parameters(model) -> int:
    """Every parameter, embeddings included: what a pruned model's size report counts."""
    return sum(p.numel() for p in model.parameters())


def dependency_graph(model) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of a classifier, traced on one short row; the model is
    left in the mode it was in (tracing switches it to eval)."""
    device = next(model.parameters()).device
    ones = torch.ones((1, 4), dtype=torch.long, device=device)
    was_training = model.training
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs={"input_ids": ones, "attention_mask": ones}
    )
    model.train(was_training)
    return graph

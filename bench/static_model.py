"""The static-embedding classifier: one vector per token, a masked mean, a small head.

No attention and no layers: a row costs one table lookup per token, so it sits at the fast end
of the front, far past any transformer student. It is a Hugging Face `PreTrainedModel` so the
one training loop, the distill modifier, vocabulary pruning, safetensors saving and every
runtime that opens a classifier directory treat it like any other model; its `model_type` tells
the transformer-only code paths (layer dropping, head pruning, QAT, attention fusion) to step
aside. The table is initialised by model2vec (`compress.models.static_init`); this module only
defines the network, so `bench` and `export` can open a saved one without model2vec installed.

It lives in `bench` for the same reason as `bench.heads`: every package that opens a PyTorch
classifier directory may import bench.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from bench.model_kind import STATIC_MODEL_TYPE

STATIC_POOLINGS = ("mean", "mean_max")
# Multiplier of the left token id in a pair's hash: a prime above any vocabulary, so pairs that
# share a left token spread over the buckets instead of landing in neighbouring ones.
PAIR_HASH_MULTIPLIER = 1_000_003


class StaticEmbeddingConfig(PretrainedConfig):
    """`embedding_dim`: width of a token vector; `head_hidden`: width of the head's hidden layer
    (0: a single linear layer); `normalize`: L2-normalise the mean before the head, as model2vec
    does (the vectors' SIF weighting then only sets each token's share of the mean);
    `pooling`: `mean`, or `mean_max`, the mean beside the element-wise maximum over the tokens
    (SWEM-concat, Shen et al. 2018): one strong word is not averaged away in a long text."""

    model_type = STATIC_MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 30522,
        embedding_dim: int = 256,
        head_hidden: int = 512,
        normalize: bool = True,
        dropout: float = 0.1,
        pad_token_id: int = 0,
        pooling: str = "mean",
        pair_buckets: int = 0,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        if pooling not in STATIC_POOLINGS:
            raise ValueError(
                f"pooling: expected one of {', '.join(STATIC_POOLINGS)}, got {pooling!r}"
            )
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.head_hidden = head_hidden
        self.normalize = normalize
        self.dropout = dropout
        self.pooling = pooling
        self.pair_buckets = pair_buckets


class StaticEmbeddingForSequenceClassification(PreTrainedModel):
    config_class = StaticEmbeddingConfig
    base_model_prefix = "static"

    def __init__(self, config: StaticEmbeddingConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.pairs = (
            nn.Embedding(config.pair_buckets, config.embedding_dim) if config.pair_buckets else None
        )
        self.dropout = nn.Dropout(config.dropout)
        width = config.embedding_dim * (2 if config.pooling == "mean_max" else 1)
        self.classifier = _head(width, config.head_hidden, config.num_labels)
        self.post_init()
        if self.pairs is not None:
            # zero pair vectors: training starts from the token table's own classifier
            nn.init.zeros_(self.pairs.weight)

    def _init_weights(self, module: nn.Module) -> None:
        """Head layers as model2vec draws them; the table is overwritten by its initialiser."""
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The masked mean of the token (and pair) vectors, with the masked maximum beside it
        for `mean_max`; each part unit-length when `normalize`."""
        vectors, mask = self._vectors(input_ids, attention_mask)
        parts = [(vectors * mask).sum(1) / mask.sum(1).clamp(min=1.0)]
        if self.config.pooling == "mean_max":
            lowest = torch.finfo(vectors.dtype).min
            parts.append(vectors.masked_fill(mask == 0, lowest).amax(1))
        if self.config.normalize:
            parts = [_unit_length(part) for part in parts]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def _vectors(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token's vector, then every adjacent pair's when there is a pair table, with the
        mask of those that count: padding never does, and a pair only when both tokens do."""
        vectors = self.embeddings(input_ids)
        mask = (
            (attention_mask if attention_mask is not None else torch.ones_like(input_ids))
            .unsqueeze(-1)
            .to(vectors.dtype)
        )
        if self.pairs is None:
            return vectors, mask
        pairs = input_ids[:, :-1] * PAIR_HASH_MULTIPLIER + input_ids[:, 1:]
        pair_vectors = self.pairs(pairs % self.config.pair_buckets)
        pair_mask = mask[:, :-1] * mask[:, 1:]
        return torch.cat([vectors, pair_vectors], dim=1), torch.cat([mask, pair_mask], dim=1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted and ignored: one input kind
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        logits = self.classifier(self.dropout(self.pooled(input_ids, attention_mask)))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _unit_length(vector: torch.Tensor) -> torch.Tensor:
    # sqrt of a sum, not norm(): ORT's shape inference has no ReduceL2 at opset 18
    return vector / (vector * vector).sum(-1, keepdim=True).clamp(min=1e-12).sqrt()


def _head(width: int, hidden: int, labels: int) -> nn.Sequential:
    if hidden == 0:
        return nn.Sequential(nn.Linear(width, labels))
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, labels))


AutoConfig.register(STATIC_MODEL_TYPE, StaticEmbeddingConfig)
AutoModelForSequenceClassification.register(
    StaticEmbeddingConfig, StaticEmbeddingForSequenceClassification
)

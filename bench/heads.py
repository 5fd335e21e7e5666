"""Pooling heads for BERT-family sequence classifiers, and the one loader that honours them.

BERT's own head reads the [CLS] vector through its pooler (dense + tanh). Sentence encoders such
as all-MiniLM-L6-v2 were trained on the mean of all token vectors instead, so their [CLS] vector
starts out less informative. A saved directory declares its head in `config.json` as
`classifier_pooling` (the key ModernBERT uses): `cls` (BERT's own), `mean`, `max` or `cls_mean`
([CLS] and mean side by side). The pooling is plain tensor arithmetic inside `forward`, so the
ONNX graph carries it and every runtime that opens the file (ORT, OpenVINO, the browser, Triton)
computes the same logits without knowing about it.

It lives in `bench` because every package that opens a PyTorch classifier directory (bench's
PyTorch runtime, export, and compress's training) may import bench.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from bench.model_kind import saved_config, saved_static
from bench.static_model import StaticEmbeddingForSequenceClassification

POOLINGS = ("cls", "mean", "max", "cls_mean")
CONFIG_KEY = "classifier_pooling"


def checked_pooling(how: str) -> str:
    if how not in POOLINGS:
        raise ValueError(f"{CONFIG_KEY}: expected one of {', '.join(POOLINGS)}, got {how!r}")
    return how


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per row from the last hidden states; padding never counts."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    if how == "mean":
        return mean
    if how == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(1)
    if checked_pooling(how) == "cls_mean":
        return torch.cat([hidden[:, 0], mean], dim=-1)
    raise ValueError(f"{CONFIG_KEY}: '{how}' reads [CLS] through BERT's pooler, not here")


class PooledBertForSequenceClassification(BertForSequenceClassification):
    """BERT with a mean, max or [CLS]+mean head; `cls` behaves exactly like the parent class.

    Non-`cls` heads drop BERT's pooler (it only ever reads [CLS]); `cls_mean` doubles the
    classifier's input width, so a plain BERT loader refuses the checkpoint instead of silently
    reading it with the wrong head.
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        how = pooling_of(config)
        if how != "cls":
            self.bert.pooler = None
            width = config.hidden_size * (2 if how == "cls_mean" else 1)
            self.classifier = nn.Linear(width, config.num_labels)
            self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        **kwargs,
    ):
        how = pooling_of(self.config)
        if how == "cls":
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                labels=labels,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                **kwargs,
            )
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        mask = attention_mask if attention_mask is not None else hidden.new_ones(hidden.shape[:2])
        logits = self.classifier(self.dropout(pool_hidden(hidden, mask, how)))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def pooling_of(config) -> str:
    """The head a config declares (`cls` when it declares none)."""
    value = (
        config.get(CONFIG_KEY) if isinstance(config, dict) else getattr(config, CONFIG_KEY, None)
    )
    return checked_pooling(value or "cls")


def declared_pooling(folder: Path) -> str:
    """The head a saved directory declares; `cls` for a directory without a readable config."""
    return pooling_of(saved_config(folder))


def sequence_classifier_class(folder: Path):
    """The class whose `from_pretrained` reads this directory with the head it was saved with."""
    if saved_static(folder):
        return StaticEmbeddingForSequenceClassification
    if declared_pooling(folder) == "cls":
        return AutoModelForSequenceClassification
    return PooledBertForSequenceClassification


def with_pooling(model, how: str):
    """The same encoder under another head. The classifier is kept where its width still fits
    (and is new for `cls_mean`); a BERT pooler dropped earlier is drawn fresh for `cls`."""
    if pooling_of(model.config) == checked_pooling(how):
        return model
    if not isinstance(model, BertForSequenceClassification):
        raise ValueError(
            f"pooling heads need a BERT-family sequence classifier, got {type(model).__name__}"
        )
    config = model.config
    setattr(config, CONFIG_KEY, how)
    head = BertForSequenceClassification if how == "cls" else PooledBertForSequenceClassification
    pooled = head(config)
    target = pooled.state_dict()
    fitting = {
        k: v for k, v in model.state_dict().items() if k in target and v.shape == target[k].shape
    }
    pooled.load_state_dict(fitting, strict=False)
    return pooled.to(next(model.parameters()).device)

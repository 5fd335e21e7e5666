"""A static-embedding student's first table, distilled by model2vec from a transformer encoder.

model2vec passes every vocabulary token through the encoder alone, mean-pools its output, then
applies PCA and SIF weighting (frequent tokens count less). We take that table row by row for
the tokenizer the student keeps (the source model's own WordPiece), so the student tokenizes
exactly like the transformer models of the run and every runtime, the web page included, reads
it with the tokenizer it already has. Tokens model2vec drops (BERT's `[unusedN]`) start at zero.

model2vec is an optional extra: it is imported only when a static stage starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel

from bench.files import first_line
from bench.model_kind import is_static
from bench.progress import library_bars_silenced
from bench.static_model import StaticEmbeddingConfig, StaticEmbeddingForSequenceClassification
from compress.errors import EdgebertError
from compress.models.names import check_model_dir

EXTRA_HINT = "pip install 'edgebert[static]' (model2vec with its distill extra)"


def _model2vec_distill():
    """model2vec's `distill_from_model`, or one line naming the extra to install."""
    if importlib.util.find_spec("model2vec") is None:
        raise EdgebertError(f"static students need model2vec: {EXTRA_HINT}")
    try:
        return importlib.import_module("model2vec.distill").distill_from_model
    except ImportError as exc:
        raise EdgebertError(f"model2vec cannot distil ({first_line(exc)}): {EXTRA_HINT}") from None


def _encoder(source_dir: Path):
    """The source model's encoder without its classifier head (AutoModel drops the head)."""
    check_model_dir(source_dir)
    config = AutoConfig.from_pretrained(str(source_dir))
    if is_static(config):
        raise EdgebertError(f"{source_dir}: a static model has no encoder to distil a table from")
    try:
        return AutoModel.from_pretrained(str(source_dir), use_safetensors=True).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise EdgebertError(f"{source_dir}: cannot load the encoder ({first_line(exc)})") from None


def distilled_table(source_dir: Path, tokenizer, dims: int | None, sif: float | None) -> np.ndarray:
    """One float32 row per id of `tokenizer`: model2vec's vector for that token, zero where
    model2vec dropped the token."""
    distill_from_model = _model2vec_distill()
    logging.getLogger("model2vec").setLevel(logging.ERROR)
    with torch.inference_mode(), library_bars_silenced():
        static = distill_from_model(
            model=_encoder(source_dir),
            tokenizer=tokenizer,
            pca_dims=dims,
            sif_coefficient=sif,
            quantize_to="float32",
            device="cpu",
        )
    rows = static.tokenizer.get_vocab()
    vectors = np.asarray(static.embedding, dtype=np.float32)
    table = np.zeros((len(tokenizer), vectors.shape[1]), dtype=np.float32)
    for token, token_id in tokenizer.get_vocab().items():
        if token in rows:
            table[token_id] = vectors[rows[token]]
    return table


def static_student(
    table: np.ndarray,
    pad_token_id: int,
    label_names: Sequence[str],
    head_hidden: int,
    normalize: bool,
    pooling: str,
    pair_buckets: int = 0,
) -> StaticEmbeddingForSequenceClassification:
    """A fresh classifier over `table` (trainable), with a newly drawn head and a zero pair
    table of `pair_buckets` rows."""
    config = StaticEmbeddingConfig(
        vocab_size=table.shape[0],
        embedding_dim=table.shape[1],
        head_hidden=head_hidden,
        normalize=normalize,
        pooling=pooling,
        pair_buckets=pair_buckets,
        pad_token_id=pad_token_id,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    model = StaticEmbeddingForSequenceClassification(config)
    with torch.no_grad():
        model.embeddings.weight.copy_(torch.from_numpy(table))
    return model

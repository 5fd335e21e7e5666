"""Loading and saving classifiers in Hugging Face layout, safetensors only.

A saved model directory is self-describing: `config.json` carries `id2label`, and
`edgebert.json` carries the cleaning steps and max length, so `predict`, `export` and `bench`
treat text exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import transformers
from safetensors import SafetensorError
from transformers import AutoModelForTokenClassification, AutoTokenizer

from bench.files import first_line, replace_dir_atomic, staging_dir
from bench.heads import sequence_classifier_class
from bench.model_file import write_model_meta
from compress.errors import EdgebertError
from compress.models.names import check_model_dir

transformers.logging.set_verbosity_error()


def load_tokenizer(model_dir: Path):
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    except (OSError, ValueError) as exc:
        raise EdgebertError(f"{model_dir}: cannot load tokenizer ({first_line(exc)})") from None


def classifier_label_count(model_dir: Path) -> int:
    """How many labels a saved classifier predicts, from its config alone: callers that only
    check a model (e.g. a teacher whose logits ONNX Runtime computes) need not load its weights."""
    check_model_dir(model_dir)
    try:
        return transformers.AutoConfig.from_pretrained(str(model_dir)).num_labels
    except (OSError, ValueError) as exc:
        raise EdgebertError(f"{model_dir}: cannot load model ({first_line(exc)})") from None


def load_classifier(
    model_dir: Path, label_names: Sequence[str] | None = None, task: str = "text-classification"
):
    """Load a sequence classifier; with `label_names`, (re)build the head for those labels.

    A checkpoint whose head has another number of labels (e.g. a sentence encoder, or a teacher
    trained on another task) gets a fresh head of the right size.
    """
    check_model_dir(model_dir)
    kwargs: dict = {"use_safetensors": True}
    if label_names is not None:
        kwargs.update(
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            ignore_mismatched_sizes=True,
        )
    try:
        auto = (
            AutoModelForTokenClassification
            if task == "token-classification"
            else sequence_classifier_class(model_dir)
        )
        model = auto.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError, SafetensorError, RuntimeError, KeyError) as exc:
        raise EdgebertError(f"{model_dir}: cannot load model ({first_line(exc)})") from None
    return model


def save_classifier(model, tokenizer, target: Path, meta: dict) -> Path:
    """Write model (safetensors), tokenizer and edgebert.json, then swap into place."""
    tmp = staging_dir(target)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    write_model_meta(tmp, meta)
    replace_dir_atomic(tmp, target)
    return target

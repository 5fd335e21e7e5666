"""The static peers a speed-first user would pick: model2vec and fastText, trained on the run's rows.

- model2vec: `distill_from_model` on the base encoder the run started from (its defaults: PCA to
  256, SIF weighting), then its own `StaticModelForClassification` with its default head,
  trained by its own `fit` (class-balanced, which it offers).
- fastText: `train_supervised` with the settings of fastText's text-classification tutorial
  (learning rate 1.0, 25 epochs, word bigrams), autotune off; everything else its defaults.

Each is an optional extra, imported only when its row is asked for; a missing one is a one-line
error naming the extra. Both answer `bench.classic.ClassicModel`, so they are timed, scored and
compared exactly like the TF-IDF rows.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.cleaning import collapse_whitespace  # fastText reads one example per line
from bench.errors import BenchError
from bench.files import first_line
from bench.progress import library_bars_silenced

EXTRAS = {"model2vec": "model2vec[distill]", "fasttext": "fasttext-numpy2"}
FASTTEXT_TUTORIAL = {"lr": 1.0, "epoch": 25, "wordNgrams": 2}
LABEL_PREFIX = "__label__"


def _extra(module: str, kind: str):
    """Import an optional extra's module, or fail in one line naming what to install."""
    root = module.split(".")[0]
    hint = f"pip install 'edgebert[peers]' (or {EXTRAS[kind]})"
    if importlib.util.find_spec(root) is None:
        raise BenchError(f"classic model '{kind}': {root} is not installed: {hint}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BenchError(f"classic model '{kind}': {first_line(exc)}: {hint}") from None


def _column_order(classes: Sequence[str], label_names: Sequence[str]) -> list[int]:
    """Where each of our labels sits among the peer's own class order."""
    position = {str(c): i for i, c in enumerate(classes)}
    missing = [name for name in label_names if name not in position]
    if missing:
        raise BenchError(f"peer never saw label(s) {', '.join(missing)} in the training rows")
    return [position[name] for name in label_names]


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probabilities, 1e-12, 1.0)).astype(np.float32)


class Model2VecPeer:
    """model2vec's classifier over a table distilled from `base_model`."""

    def __init__(self, base_model: Path, texts, labels, label_names: Sequence[str], seed: int = 42):
        distill = _extra("model2vec.distill", "model2vec").distill_from_model
        train = _extra("model2vec.train", "model2vec")
        from transformers import AutoModel, AutoTokenizer  # model2vec's distill needs them

        logging.getLogger("model2vec").setLevel(logging.ERROR)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(base_model))
            encoder = AutoModel.from_pretrained(str(base_model), use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise BenchError(
                f"model2vec peer: cannot load {base_model} ({first_line(exc)})"
            ) from None
        names = [label_names[i] for i in labels]
        with library_bars_silenced():
            static = distill(model=encoder, tokenizer=tokenizer, device="cpu")
            classifier = train.StaticModelForClassification.from_static_model(model=static)
            self.classifier = classifier.fit(
                list(texts), names, class_weight="balanced", device="cpu", random_seed=seed
            ).eval()
        self.order = _column_order(self.classifier.classes_, label_names)

    def log_proba(self, texts: list[str]) -> np.ndarray:
        return _log(self.classifier.predict_proba(texts)[:, self.order])

    def serialized(self) -> bytes:
        """Its weights' bytes (table and head), as a file of them would hold."""
        return b"".join(
            t.detach().cpu().numpy().tobytes() for t in self.classifier.state_dict().values()
        )

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        encoded = self.classifier.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [sum(e.attention_mask) for e in encoded]  # its tokenizer pads: count the rest


class FastTextPeer:
    """fastText supervised, trained from a temporary file (its only input format)."""

    def __init__(self, texts, labels, label_names: Sequence[str], seed: int = 42):
        fasttext = _extra("fasttext", "fasttext")
        with tempfile.TemporaryDirectory(prefix="edgebert-fasttext-") as folder:
            train_file = Path(folder) / "train.txt"
            train_file.write_text(
                "".join(
                    f"{LABEL_PREFIX}{i} {collapse_whitespace(t)}\n"
                    for t, i in zip(texts, labels, strict=True)
                ),
                encoding="utf-8",
            )
            self.model = fasttext.train_supervised(
                input=str(train_file), seed=seed, thread=1, verbose=0, **FASTTEXT_TUTORIAL
            )
        classes = [label.removeprefix(LABEL_PREFIX) for label in self.model.labels]
        self.order = _column_order(classes, [str(i) for i in range(len(label_names))])

    def log_proba(self, texts: list[str]) -> np.ndarray:
        labels, probabilities = self.model.predict([collapse_whitespace(t) for t in texts], k=-1)
        out = np.zeros((len(texts), len(self.order)), dtype=np.float64)
        index = {f"{LABEL_PREFIX}{i}": i for i in range(len(self.order))}
        for row, (names, values) in enumerate(zip(labels, probabilities, strict=True)):
            for name, value in zip(names, values, strict=True):
                out[row, index[name]] = value
        return _log(out)

    def serialized(self) -> bytes:
        with tempfile.TemporaryDirectory(prefix="edgebert-fasttext-") as folder:
            path = os.path.join(folder, "model.bin")
            self.model.save_model(path)
            return Path(path).read_bytes()

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

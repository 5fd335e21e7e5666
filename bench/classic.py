"""Classic baselines: TF-IDF (word 1-2 grams) with logistic regression or complement naive
Bayes, and the static peers model2vec and fastText (`bench.static_peers`), trained on the run's
training rows and benchmarked like any model.

A transformer has to earn its latency against these: they train in seconds and answer in
microseconds. `ClassicRunner` answers the calls the benchmark makes of a transformer runner
(encode, run, bound, logits), so the same interleaved timing, accuracy, paired comparison and
real-traffic pass apply; texts go in as they are (the vectorizer tokenizes them).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import make_pipeline

from bench.errors import BenchError
from bench.runtime import RuntimeSettings
from bench.static_peers import FastTextPeer, Model2VecPeer

CLASSIC_MODELS = ("tfidf_lr", "tfidf_nb", "model2vec", "fasttext")


def classic_pipeline(kind: str):
    """`tfidf_lr`: class-balanced logistic regression; `tfidf_nb`: complement naive Bayes (made
    for imbalanced text classes)."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    if kind == "tfidf_lr":
        return make_pipeline(vectorizer, LogisticRegression(max_iter=3000, class_weight="balanced"))
    if kind == "tfidf_nb":
        return make_pipeline(vectorizer, ComplementNB())
    raise BenchError(f"classic model '{kind}': expected one of {', '.join(CLASSIC_MODELS)}")


class ClassicModel(Protocol):
    """What a classic baseline answers: log-probabilities in the run's label order, its bytes
    (for the size columns) and how many tokens it reads of each text."""

    def log_proba(self, texts: list[str]) -> np.ndarray: ...

    def serialized(self) -> bytes: ...

    def token_counts(self, texts: Sequence[str]) -> list[int]: ...


@dataclass
class SklearnModel:
    """A fitted TF-IDF pipeline."""

    pipeline: Any

    def log_proba(self, texts: list[str]) -> np.ndarray:
        return self.pipeline.predict_log_proba(texts)

    def serialized(self) -> bytes:
        return pickle.dumps(self.pipeline, protocol=pickle.HIGHEST_PROTOCOL)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        analyze = self.pipeline.steps[0][1].build_analyzer()
        return [len(analyze(text)) for text in texts]


@dataclass
class ClassicRunner:
    """A fitted classic baseline behind the benchmark's runner calls."""

    model: ClassicModel
    label_names: list[str]
    path: Path
    kind: str = "sklearn"
    token_level: bool = False
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)

    @property
    def size_bytes(self) -> int:
        return len(self.model.serialized())

    @property
    def zipped_bytes(self) -> int:
        return len(zlib.compress(self.model.serialized(), 6))

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> list[str]:
        return list(texts)

    def run(self, texts: list[str]) -> np.ndarray:
        return self.model.log_proba(texts)

    def bound(self, texts: list[str]):
        return lambda: self.run(texts)

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        rows = [self.run(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(rows)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return self.model.token_counts(texts)


def fit_classic(
    kind: str,
    texts: Sequence[str],
    labels: Sequence[int] | None,
    label_names: list[str],
    base_model: Path | None = None,
) -> ClassicRunner:
    """Train one classic baseline on the training rows (seconds to a minute on a CPU).
    `base_model` is the encoder the model2vec peer distils its table from."""
    if not texts or labels is None or len(texts) != len(labels):
        raise BenchError(f"classic model '{kind}': needs training texts with a label each")
    if len(set(labels)) < 2:
        raise BenchError(f"classic model '{kind}': the training rows hold a single label")
    missing = sorted(set(range(len(label_names))) - set(labels))
    if missing:
        names = ", ".join(label_names[i] for i in missing)
        raise BenchError(f"classic model '{kind}': no training rows for label(s) {names}")
    family = "sklearn" if kind.startswith("tfidf") else "peer"
    return ClassicRunner(
        _fit(kind, list(texts), list(labels), label_names, base_model),
        list(label_names),
        Path(f"{family}:{kind}"),
        kind=family,
    )


def _fit(kind: str, texts, labels, label_names, base_model: Path | None) -> ClassicModel:
    if kind == "model2vec":
        if base_model is None:
            raise BenchError(
                "classic model 'model2vec': name the encoder it distils from (model2vec_base "
                "in a recipe, --model2vec-base on the command line)"
            )
        return Model2VecPeer(base_model, texts, labels, label_names)
    if kind == "fasttext":
        return FastTextPeer(texts, labels, label_names)
    return SklearnModel(classic_pipeline(kind).fit(texts, labels))

"""Classic baselines: TF-IDF (word 1-2 grams) with logistic regression or complement naive
Bayes, trained on the run's training rows and benchmarked like any model.

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
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import make_pipeline

from bench.errors import BenchError
from bench.runtime import RuntimeSettings

CLASSIC_MODELS = ("tfidf_lr", "tfidf_nb")


def classic_pipeline(kind: str):
    """`tfidf_lr`: class-balanced logistic regression; `tfidf_nb`: complement naive Bayes (made
    for imbalanced text classes)."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    if kind == "tfidf_lr":
        return make_pipeline(vectorizer, LogisticRegression(max_iter=3000, class_weight="balanced"))
    if kind == "tfidf_nb":
        return make_pipeline(vectorizer, ComplementNB())
    raise BenchError(f"classic model '{kind}': expected one of {', '.join(CLASSIC_MODELS)}")


@dataclass
class ClassicRunner:
    """A fitted TF-IDF pipeline behind the benchmark's runner calls."""

    pipeline: Any
    label_names: list[str]
    path: Path
    kind: str = "sklearn"
    token_level: bool = False
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)

    @property
    def size_bytes(self) -> int:
        return len(self._pickled())

    @property
    def zipped_bytes(self) -> int:
        return len(zlib.compress(self._pickled(), 6))

    def _pickled(self) -> bytes:
        return pickle.dumps(self.pipeline, protocol=pickle.HIGHEST_PROTOCOL)

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> list[str]:
        return list(texts)

    def run(self, texts: list[str]) -> np.ndarray:
        return self.pipeline.predict_log_proba(texts)

    def bound(self, texts: list[str]):
        return lambda: self.run(texts)

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        rows = [self.run(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(rows)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        analyze = self.pipeline.steps[0][1].build_analyzer()
        return [len(analyze(text)) for text in texts]


def fit_classic(
    kind: str, texts: Sequence[str], labels: Sequence[int] | None, label_names: list[str]
) -> ClassicRunner:
    """Train one classic baseline on the training rows (seconds on a CPU)."""
    if not texts or labels is None or len(texts) != len(labels):
        raise BenchError(f"classic model '{kind}': needs training texts with a label each")
    if len(set(labels)) < 2:
        raise BenchError(f"classic model '{kind}': the training rows hold a single label")
    pipeline = classic_pipeline(kind).fit(list(texts), list(labels))
    missing = sorted(set(range(len(label_names))) - set(pipeline.classes_.tolist()))
    if missing:
        names = ", ".join(label_names[i] for i in missing)
        raise BenchError(f"classic model '{kind}': no training rows for label(s) {names}")
    return ClassicRunner(pipeline, list(label_names), Path(f"sklearn:{kind}"))

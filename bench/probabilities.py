"""Softmax of logits, in one place (metrics, predict and explain use it); numpy only, so the
torch- and scikit-learn-free paths (predict and explain on an .onnx file) can import it."""

from __future__ import annotations

import numpy as np


def softmax(logits) -> np.ndarray:
    """Probabilities of rows of logits (float64, shifted by each row's max: no overflow)."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


# Upper edges of the confidence bins (top-class probability) that the bench report, the
# server's /metrics histogram and `edgebert monitor` share.
CONFIDENCE_EDGES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def prediction_profile(logits, label_names: list[str]) -> tuple[dict[str, float], list[float]]:
    """(share of rows predicted as each label, share of rows in each confidence bin): what a
    model's answers look like on a split, for later drift checks against served traffic."""
    probs = softmax(logits)
    return label_shares(probs.argmax(-1), label_names), confidence_shares(probs.max(-1))


def label_shares(predictions, label_names: list[str]) -> dict[str, float]:
    counts = np.bincount(np.asarray(predictions, dtype=int), minlength=len(label_names))
    return {name: float(c / max(counts.sum(), 1)) for name, c in zip(label_names, counts)}


def confidence_shares(confidences) -> list[float]:
    """Share of rows per bin: bin i holds (edge[i-1], edge[i]], the first everything <= 0.4."""
    confidences = np.asarray(confidences, dtype=np.float64)
    bins = np.searchsorted(np.asarray(CONFIDENCE_EDGES), confidences, side="left")
    counts = np.bincount(
        np.minimum(bins, len(CONFIDENCE_EDGES) - 1), minlength=len(CONFIDENCE_EDGES)
    )
    return [float(c / max(len(confidences), 1)) for c in counts]

"""Softmax of logits, in one place (metrics, predict and explain use it); numpy only, so the
torch- and scikit-learn-free paths (predict and explain on an .onnx file) can import it."""

from __future__ import annotations

import numpy as np


def softmax(logits) -> np.ndarray:
    """Probabilities of rows of logits (float64, shifted by each row's max: no overflow)."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)

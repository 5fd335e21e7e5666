"""Decision thresholds for imbalanced classes: per-class logit offsets tuned on validation.

argmax(logits + offsets) is the prior-corrected decision rule: an offset raises or lowers how
readily the model says a class. Tuning the offsets for validation macro-F1 (coordinate ascent
over a grid, class 0 fixed) and adding them to the classifier's bias puts the tuned rule inside
the model itself, so every exported file (ONNX, INT8, .ort) decides the same way with no
post-processing. Judge the result on the test split: on validation it is optimistic.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.metrics import classification_metrics
from compress.errors import EdgebertError

GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 2)
PASSES = 3


def best_offsets(logits: np.ndarray, labels, label_names: list[str]) -> np.ndarray:
    """Offsets (one per class, class 0 at 0) that maximise macro-F1 of argmax(logits + o);
    ties go to the smaller offset, so a balanced problem keeps offsets of 0."""
    offsets = np.zeros(logits.shape[1])

    def score(candidate: np.ndarray) -> float:
        preds = (logits + candidate).argmax(-1)
        return classification_metrics(labels, preds, label_names)["macro_f1"]

    best = score(offsets)
    for _ in range(PASSES):
        for c in range(1, logits.shape[1]):
            for value in sorted(GRID, key=abs):
                trial = offsets.copy()
                trial[c] = value
                value_score = score(trial)
                if value_score > best + 1e-12:
                    best, offsets = value_score, trial
    return offsets


def classifier_bias(model, classes: int) -> torch.nn.Parameter:
    """The bias of the last layer that outputs one value per class."""
    found = [
        param
        for name, param in model.named_parameters()
        if name.endswith("bias") and tuple(param.shape) == (classes,) and "classifier" in name
    ]
    if not found:
        raise EdgebertError("training.tune_thresholds: no classifier bias found in this model")
    return found[-1]


def tune_thresholds(phase) -> dict:
    """Tune offsets on the phase's validation rows and add them to the classifier bias."""
    if phase.token_level:
        raise EdgebertError("training.tune_thresholds: sentence classification only")
    logits = phase.validation_logits()
    before = classification_metrics(phase.eval_labels, logits.argmax(-1), phase.label_names)
    offsets = best_offsets(logits, phase.eval_labels, phase.label_names)
    with torch.no_grad():
        bias = classifier_bias(phase.model, len(phase.label_names))
        bias += torch.as_tensor(offsets, dtype=bias.dtype, device=bias.device)
    after = classification_metrics(
        phase.eval_labels, (logits + offsets).argmax(-1), phase.label_names
    )
    phase.log(
        f"thresholds: offsets {np.round(offsets, 2).tolist()}; validation macro_f1 "
        f"{before['macro_f1']:.4f} -> {after['macro_f1']:.4f} (optimistic: judge on test)"
    )
    return {
        "offsets": [float(o) for o in offsets],
        "validation_macro_f1_before": before["macro_f1"],
        "validation_macro_f1_after": after["macro_f1"],
    }

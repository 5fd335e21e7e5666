"""The one classification-metrics function every stage, report and test uses.

Keeping a single definition means a number in a training log, a benchmark report and a model card
always means the same thing (macro averages over all classes, zero_division=0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from bench.entities import entity_spans
from bench.probabilities import softmax


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str]
) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    All classes in `label_names` are counted, including ones absent from this sample, so macro
    scores stay comparable across splits. Rows of the confusion matrix are true labels.
    """
    y_true_arr = np.asarray(y_true, dtype=np.int64)
    y_pred_arr = np.asarray(y_pred, dtype=np.int64)
    if y_true_arr.shape != y_pred_arr.shape:
        raise ValueError(f"y_true has {y_true_arr.size} items but y_pred has {y_pred_arr.size}")
    labels = list(range(len(label_names)))
    n = int(y_true_arr.size)
    if n == 0:
        raise ValueError("cannot compute metrics on an empty set")
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true_arr, y_pred_arr, labels=labels, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(label_names)
    }
    return {
        "n": n,
        "accuracy": float((y_true_arr == y_pred_arr).mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true_arr, y_pred_arr, labels=labels).tolist(),
        "labels": list(label_names),
    }


METRIC_NAMES = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "entity_f1")


def expected_calibration_error(logits: np.ndarray, labels: Sequence[int], bins: int = 15) -> float:
    """How far confidence is from accuracy: rows binned by their top softmax probability (15
    equal-width bins), the gap |accuracy - mean confidence| of each bin weighted by its share of
    rows. 0 is perfectly calibrated; a model that says 90% and is right 70% of the time has 0.2."""
    probs = softmax(logits)
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.mean() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(total)


def token_metrics(
    y_true: Sequence[Sequence[int]], y_pred: Sequence[Sequence[int]], label_names: Sequence[str]
) -> dict:
    """Token classification: entity-level precision/recall/F1 (micro, `entity_f1`) and per
    entity type, whose mean is `macro_f1`; `accuracy` and the confusion matrix are per word."""
    if len(y_true) != len(y_pred) or any(len(t) != len(p) for t, p in zip(y_true, y_pred)):
        raise ValueError("true and predicted tag rows differ in shape")
    words = classification_metrics(
        [t for row in y_true for t in row], [p for row in y_pred for p in row], label_names
    )
    kinds = sorted({name.partition("-")[2] for name in label_names if name != "O"})
    found = {k: [0, 0, 0] for k in kinds}  # true positives, predicted, gold
    for true_row, pred_row in zip(y_true, y_pred):
        gold = entity_spans([label_names[t] for t in true_row])
        pred = entity_spans([label_names[p] for p in pred_row])
        for kind, *_ in pred:
            found.setdefault(kind, [0, 0, 0])[1] += 1
        for kind, *_ in gold:
            found.setdefault(kind, [0, 0, 0])[2] += 1
        for kind, *_ in gold & pred:
            found[kind][0] += 1

    def prf(tp: int, predicted: int, gold: int) -> tuple[float, float, float]:
        p = tp / predicted if predicted else 0.0
        r = tp / gold if gold else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    per_type = {}
    for kind, (tp, predicted, gold) in found.items():
        p, r, f = prf(tp, predicted, gold)
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": gold}
    totals = [sum(v[i] for v in found.values()) for i in range(3)]
    precision, recall, f1 = prf(*totals)
    return {
        **words,
        "macro_precision": float(np.mean([v["precision"] for v in per_type.values()]))
        if per_type
        else 0.0,
        "macro_recall": float(np.mean([v["recall"] for v in per_type.values()]))
        if per_type
        else 0.0,
        "macro_f1": float(np.mean([v["f1"] for v in per_type.values()])) if per_type else 0.0,
        "entity_precision": precision,
        "entity_recall": recall,
        "entity_f1": f1,
        "per_class": per_type,
    }


def population_stability(reference: Sequence[float], current: Sequence[float]) -> float:
    """PSI = sum((current - reference) * ln(current / reference)) over shares of the same bins
    (labels, or confidence bins), each share floored at 1e-4. Rule of thumb: under 0.1 stable,
    0.1-0.2 a shift worth watching, over 0.2 a shift to act on."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), 1e-4)
    cur = np.maximum(np.asarray(current, dtype=np.float64), 1e-4)
    return float(((cur - ref) * np.log(cur / ref)).sum())

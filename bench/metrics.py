"""The one classification-metrics function every stage, report and test uses.

Keeping a single definition means a number in a training log, a benchmark report and a model card
always means the same thing (macro averages over all classes, zero_division=0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


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


METRIC_NAMES = ("accuracy", "macro_f1", "macro_precision", "macro_recall")

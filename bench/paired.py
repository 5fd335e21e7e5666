"""Is a model really better or worse than the reference on the same rows, or is it noise?

Both models answered the same evaluation rows, so their scores are paired: resampling rows (the
same resample for both) gives a confidence interval of the *difference*, much tighter than two
separate intervals. McNemar's exact test asks the same of the rows where exactly one of them is
right. `edgebert bench` reports both for every model against its baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 2000
SEED = 20261126  # fixed: the same report twice gives the same intervals
CHUNK = 250  # resamples scored at once (bounds memory on large test sets)


def _scores(codes: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, macro-F1) of each row of `codes` (true * classes + predicted)."""
    rows = codes.shape[0]
    offsets = (np.arange(rows) * classes * classes)[:, None]
    counts = np.bincount((codes + offsets).ravel(), minlength=rows * classes * classes)
    confusion = counts.reshape(rows, classes, classes)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    accuracy = hits.sum(1) / codes.shape[1]
    denominator = confusion.sum(1) + confusion.sum(2)  # predicted + true per class
    f1 = np.divide(2 * hits, denominator, out=np.zeros(hits.shape), where=denominator > 0)
    return accuracy, f1.mean(1)


def paired_difference(
    y_true: Sequence[int],
    reference: Sequence[int],
    candidate: Sequence[int],
    classes: int,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict:
    """Candidate minus reference: accuracy and macro-F1 differences with 95% paired-bootstrap
    intervals, and McNemar's exact two-sided p on the discordant rows."""
    truth, ref, cand = (np.asarray(a, dtype=np.int64) for a in (y_true, reference, candidate))
    n = truth.size
    rng = np.random.default_rng(seed)
    ref_codes, cand_codes = truth * classes + ref, truth * classes + cand
    acc_diffs, f1_diffs = [], []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, n, size=(min(CHUNK, resamples - start), n))
        ref_acc, ref_f1 = _scores(ref_codes[idx], classes)
        cand_acc, cand_f1 = _scores(cand_codes[idx], classes)
        acc_diffs.append(cand_acc - ref_acc)
        f1_diffs.append(cand_f1 - ref_f1)
    full_ref, full_cand = _scores(ref_codes[None], classes), _scores(cand_codes[None], classes)
    only_reference = int(((ref == truth) & (cand != truth)).sum())
    only_candidate = int(((cand == truth) & (ref != truth)).sum())
    discordant = only_reference + only_candidate
    p_value = binomtest(only_candidate, discordant, 0.5).pvalue if discordant else 1.0
    return {
        "resamples": resamples,
        "accuracy_diff": float(full_cand[0][0] - full_ref[0][0]),
        "accuracy_ci": [float(v) for v in np.percentile(np.concatenate(acc_diffs), [2.5, 97.5])],
        "macro_f1_diff": float(full_cand[1][0] - full_ref[1][0]),
        "macro_f1_ci": [float(v) for v in np.percentile(np.concatenate(f1_diffs), [2.5, 97.5])],
        "mcnemar_p": float(p_value),
        "only_reference_right": only_reference,
        "only_model_right": only_candidate,
    }


def bootstrap_intervals(
    y_true: Sequence[int],
    predictions: Sequence[int],
    classes: int,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict:
    """One model's accuracy and macro-F1 with 95% bootstrap intervals: for rows that no
    reference answered (so nothing to pair with), e.g. newly labelled feedback."""
    codes = np.asarray(y_true, dtype=np.int64) * classes + np.asarray(predictions, dtype=np.int64)
    rng = np.random.default_rng(seed)
    accs, f1s = [], []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, codes.size, size=(min(CHUNK, resamples - start), codes.size))
        acc, f1 = _scores(codes[idx], classes)
        accs.append(acc)
        f1s.append(f1)
    full_acc, full_f1 = _scores(codes[None], classes)
    return {
        "accuracy": float(full_acc[0]),
        "accuracy_ci": [float(v) for v in np.percentile(np.concatenate(accs), [2.5, 97.5])],
        "macro_f1": float(full_f1[0]),
        "macro_f1_ci": [float(v) for v in np.percentile(np.concatenate(f1s), [2.5, 97.5])],
    }

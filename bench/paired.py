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
    ref_codes, cand_codes = truth * classes + ref, truth * classes + cand
    (ref_acc, ref_f1), (cand_acc, cand_f1) = _resampled_scores(
        [ref_codes, cand_codes], classes, resamples, seed
    )
    full_ref, full_cand = _scores(ref_codes[None], classes), _scores(cand_codes[None], classes)
    only_reference = int(((ref == truth) & (cand != truth)).sum())
    only_candidate = int(((cand == truth) & (ref != truth)).sum())
    discordant = only_reference + only_candidate
    p_value = binomtest(only_candidate, discordant, 0.5).pvalue if discordant else 1.0
    return {
        "resamples": resamples,
        "accuracy_diff": float(full_cand[0][0] - full_ref[0][0]),
        "accuracy_ci": _interval(cand_acc - ref_acc),
        "macro_f1_diff": float(full_cand[1][0] - full_ref[1][0]),
        "macro_f1_ci": _interval(cand_f1 - ref_f1),
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
    ((accs, f1s),) = _resampled_scores([codes], classes, resamples, seed)
    full_acc, full_f1 = _scores(codes[None], classes)
    return {
        "accuracy": float(full_acc[0]),
        "accuracy_ci": _interval(accs),
        "macro_f1": float(full_f1[0]),
        "macro_f1_ci": _interval(f1s),
    }


def _resampled_scores(
    code_arrays: list[np.ndarray], classes: int, resamples: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(accuracy, macro-F1) of every bootstrap resample of the rows, for each array of codes;
    all arrays share each resample (so their scores are paired). Seeded, in chunks."""
    rng = np.random.default_rng(seed)
    rows = code_arrays[0].size
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in code_arrays]
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, rows, size=(min(CHUNK, resamples - start), rows))
        for part, codes in zip(parts, code_arrays):
            part.append(_scores(codes[idx], classes))
    return [
        (np.concatenate([a for a, _ in part]), np.concatenate([f for _, f in part]))
        for part in parts
    ]


def _interval(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]

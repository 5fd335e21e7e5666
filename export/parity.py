"""Does the exported model say what the PyTorch model says? Logits and labels, side by side."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class ParityResult:
    rows: int
    max_abs_diff: float
    mean_abs_diff: float
    label_agreement: float
    max_abs_diff_limit: float | None
    min_label_agreement: float | None

    @property
    def passed(self) -> bool:
        if self.max_abs_diff_limit is not None and self.max_abs_diff > self.max_abs_diff_limit:
            return False
        if self.min_label_agreement is not None and self.label_agreement < self.min_label_agreement:
            return False
        return True

    def as_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}

    def summary(self) -> str:
        return (
            f"{self.rows} rows: max |dlogit| {self.max_abs_diff:.2e}, "
            f"labels agree {self.label_agreement:.2%}"
        )


def compare_logits(
    reference: np.ndarray,
    candidate: np.ndarray,
    max_abs_diff: float | None = None,
    min_label_agreement: float | None = None,
) -> ParityResult:
    if isinstance(reference, list):  # token classification: rows of [tokens, labels]
        reference, candidate = np.concatenate(reference), np.concatenate(candidate)
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree = float((reference.argmax(-1) == candidate.argmax(-1)).mean())
    return ParityResult(
        rows=int(reference.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        label_agreement=agree,
        max_abs_diff_limit=max_abs_diff,
        min_label_agreement=min_label_agreement,
    )

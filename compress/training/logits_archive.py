"""The `.npz` of precomputed teacher logits that `distill.teacher_logits` reads.

Why a file: a teacher made on a GPU machine labels the training and transfer rows once; the
archive (a few hundred KB) is committed or copied, and students are then distilled on any CPU
without the teacher's weights. Keys: `train_logits` (rows x labels, float32),
`train_texts_sha256` (of the rows' texts joined by newlines, in training order: an archive made
for other rows is refused), `teacher` (where the logits came from).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from compress.errors import EdgebertError


def texts_sha256(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def save_logits_archive(path: Path, logits: np.ndarray, texts: list[str], teacher: str) -> None:
    if len(logits) != len(texts):
        raise ValueError(f"{len(logits)} logit rows for {len(texts)} texts")
    np.savez_compressed(
        path,
        train_logits=np.asarray(logits, dtype=np.float32),
        train_texts_sha256=np.array(texts_sha256(texts)),
        teacher=np.array(teacher),
    )


def load_logits_archive(path: Path, texts: list[str], num_labels: int) -> np.ndarray:
    """The archive's logits for exactly these training rows, or a one-line error."""
    if not path.is_file():
        raise EdgebertError(f"distill.teacher_logits: file not found: {path}")
    try:
        with np.load(path) as archive:
            logits = archive["train_logits"]
            digest = str(archive["train_texts_sha256"]) if "train_texts_sha256" in archive else None
    except (OSError, KeyError, ValueError) as exc:
        raise EdgebertError(f"distill.teacher_logits: {path}: unreadable ({exc})") from None
    expected = texts_sha256(texts)
    if logits.shape != (len(texts), num_labels) or (digest is not None and digest != expected):
        raise EdgebertError(
            f"distill.teacher_logits: {path} was made for other training rows "
            f"(shape {logits.shape}, texts hash {str(digest)[:12]}, expected {expected[:12]})"
        )
    return logits.astype(np.float32)

"""Distillation transfer sets: more text for the student than the labelled train split.

The teacher labels every transfer row with soft logits (cached once, like the train rows'),
so the student learns the teacher's function on far more inputs than the labels cover.
TinyBERT loses 2 to 21 points per task without its augmented transfer set, and XtremeDistil
gets its small students close to the teacher by distilling on unlabeled in-domain text.

Sources, combinable:
- `files`: unlabeled in-domain text (JSONL or CSV/TSV, any text column), cleaned like the task;
- `datasets`: staged sets by name, every split's texts (labels unread);
- `augment`: perturbed copies of the labelled training rows, labelled by the teacher (not by
  the row they came from: a perturbation may well flip the sentiment).

Rows that repeat a train, validation or test text are dropped: a transfer set that held
evaluation texts would leak the teacher's answers on them into the student.
"""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from bench.cleaning import make_cleaner
from compress.data.augment import AugmentConfig, augment_split
from compress.data.splits import SPLIT_NAMES, TaskData, find_split_file, read_texts, resolve_dataset
from compress.engine.config import Strict
from compress.errors import EdgebertError


class TransferConfig(Strict):
    """`distill.transfer`: unlabeled rows the student is distilled on, besides the train split."""

    files: list[Path] = Field(
        default_factory=list, description="unlabeled in-domain text: JSONL or CSV/TSV files"
    )
    datasets: list[str] = Field(
        default_factory=list, description="staged sets by name: the texts of all their splits"
    )
    text_field: str = Field("text", description="the text field (JSONL) or column (CSV)")
    max_rows: int | None = Field(
        None, ge=1, description="a seeded sample of at most this many rows from the files"
    )
    augment: AugmentConfig | None = Field(
        None, description="perturbed copies of the labelled training rows, labelled by the teacher"
    )

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, names: list[str]) -> list[str]:
        """Resolved when the recipe is validated: a typo must not surface stages later."""
        for name in names:
            try:
                resolve_dataset(name)
            except EdgebertError as exc:
                raise ValueError(str(exc)) from None
        return names

    @model_validator(mode="after")
    def _has_a_source(self) -> TransferConfig:
        if not self.files and not self.datasets and self.augment is None:
            raise ValueError(
                "give 'files' or 'datasets' (unlabeled text) and/or 'augment' (copies of train)"
            )
        return self


def _unlabeled_texts(config: TransferConfig, clean) -> list[str]:
    """The texts of every named file and staged set, in recipe order."""
    sources = [(f"files[{i}]", path) for i, path in enumerate(config.files)]
    for i, name in enumerate(config.datasets):
        try:
            folder = resolve_dataset(name)
        except EdgebertError as exc:
            raise EdgebertError(f"distill.transfer.datasets[{i}]: {exc}") from None
        sources += [
            (f"datasets[{i}]", path)
            for split in SPLIT_NAMES
            if (path := find_split_file(folder, split)) is not None
        ]
    texts: list[str] = []
    for where, path in sources:
        try:
            texts += read_texts(path, clean, config.text_field)
        except EdgebertError as exc:
            raise EdgebertError(f"distill.transfer.{where}: {exc}") from None
    return texts


def load_transfer_texts(
    config: TransferConfig, data: TaskData, clean_steps: list[str], seed: int
) -> tuple[list[str], dict]:
    """(transfer texts in a fixed order, counts of what was read and dropped)."""
    read = _unlabeled_texts(config, make_cleaner(clean_steps))
    if config.max_rows is not None and len(read) > config.max_rows:
        read = random.Random(seed).sample(read, config.max_rows)
    augmented: list[str] = []
    if config.augment is not None:
        with_copies, _ = augment_split(data.train, config.augment, seed)
        augmented = with_copies.texts[len(data.train) :]
    known = set(data.train.texts) | set(data.validation.texts)
    if data.test is not None:
        known |= set(data.test.texts)
    texts, seen, overlap = [], set(), 0
    for text in read + augmented:
        if text in known:
            overlap += 1
        elif text not in seen:
            seen.add(text)
            texts.append(text)
    report = {
        "file_rows": len(read),
        "augmented_rows": len(augmented),
        "dropped_known_texts": overlap,
        "dropped_duplicates": len(read) + len(augmented) - overlap - len(texts),
        "rows": len(texts),
    }
    return texts, report

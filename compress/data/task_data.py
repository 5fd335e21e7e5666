"""A recipe's `data:` section -> every split, cleaned, validated, subsampled and augmented.

Composes the one file loader (`compress.data.splits`), the token-classification loader
(`compress.data.ner_data`) and augmentation (`compress.data.augment`); those three sit below this module,
so none of them needs to import another lazily.
"""

from __future__ import annotations

from pathlib import Path

from bench.cleaning import make_cleaner
from compress.data.augment import augment_split
from compress.data.ner_data import load_token_task
from compress.data.splits import (
    SPLIT_NAMES,
    Split,
    TaskData,
    carve_validation,
    dataset_folder,
    find_split_file,
    label_names_for,
    read_split,
    subsample,
)
from compress.errors import EdgebertError


def load_task_data(cfg, seed: int, task: str = "text-classification") -> TaskData:
    """Everything a recipe's `data:` section names, cleaned and validated.

    `cfg` is the recipe's DataConfig.
    """
    if task == "token-classification":
        return load_token_task(cfg, seed)

    clean = make_cleaner(cfg.clean)
    folder = dataset_folder(cfg)
    paths: dict[str, Path | None] = {}
    for split in SPLIT_NAMES:
        explicit = getattr(cfg, split)
        paths[split] = (
            explicit
            if explicit is not None
            else (find_split_file(folder, split) if folder else None)
        )
    if paths["train"] is None:
        raise EdgebertError(f"dataset '{cfg.dataset}' has no train split")
    label_names = label_names_for(cfg, folder, paths["train"])
    skipped: list[str] | None = [] if cfg.on_bad_rows == "skip" else None
    read = lambda p: read_split(  # noqa: E731
        p, label_names, clean, cfg.text_field, cfg.label_field, skipped
    )
    train = read(paths["train"])
    validation = read(paths["validation"]) if paths["validation"] else None
    test = read(paths["test"]) if paths["test"] else None
    if validation is None:
        train, validation = carve_validation(train, cfg.validation_fraction, seed, label_names)
    train = subsample(train, cfg.max_train_rows, seed)
    for extra in cfg.extra_train:  # after subsampling: every added row is kept
        rows = read(extra)
        train = Split(train.texts + rows.texts, train.labels + rows.labels, train.source)
    validation = subsample(validation, cfg.max_eval_rows, seed)
    if test is not None:
        test = subsample(test, cfg.max_eval_rows, seed)
    added = 0
    if getattr(cfg, "augment", None) is not None:  # training rows only, after subsampling
        train, added = augment_split(train, cfg.augment, seed)
    files = [p for p in paths.values() if p is not None] + list(cfg.extra_train)
    return TaskData(
        label_names,
        train,
        validation,
        test,
        files,
        augmented_rows=added,
        skipped_rows=skipped or [],
    )

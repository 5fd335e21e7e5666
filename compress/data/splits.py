"""The one data loader: labelled text files -> cleaned, validated, tokenized splits.

Accepts JSONL (`{"text", "label"}`) and CSV/TSV with text and label columns; labels may be ints or
names, resolved against `labels.json` or the recipe's label list. Every rejected row is reported
with its file and line, because a user fixing a 50k-row file needs to know where to look.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sklearn.model_selection import train_test_split

from compress.errors import EdgebertError

SAMPLES_DIR = Path(__file__).parent.parent / "samples"
SPLIT_NAMES = ("train", "validation", "test")
DATA_SUFFIXES = (".jsonl", ".csv", ".tsv")


@dataclass
class Split:
    """One split: parallel lists of cleaned texts and integer labels."""

    texts: list[str]
    labels: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TaskData:
    """All splits of a task plus its label names and the files they came from."""

    label_names: list[str]
    train: Split
    validation: Split
    test: Split | None = None
    files: list[Path] = field(default_factory=list)
    augmented_rows: int = 0
    skipped_rows: list[str] = field(default_factory=list)  # `FILE:LINE: reason`, on_bad_rows: skip

    def split(self, name: str) -> Split:
        value = getattr(self, name, None)
        if value is None:
            raise EdgebertError(f"the data has no '{name}' split")
        return value


def dataset_search_path() -> list[Path]:
    """Where staged data sets are looked up by name, first match wins.

    The packaged samples come first so the quickstart works on a fresh clone; then
    EDGEBERT_DATASETS, then `shared/datasets` next to or above the working directory.
    """
    paths = [SAMPLES_DIR]
    if os.environ.get("EDGEBERT_DATASETS"):
        paths.append(Path(os.environ["EDGEBERT_DATASETS"]))
    cwd = Path.cwd()
    paths += [cwd / "shared" / "datasets", cwd.parent / "shared" / "datasets"]
    repo = Path(__file__).resolve().parents[2]
    paths.append(repo.parent / "shared" / "datasets")
    return paths


def resolve_dataset(name: str) -> Path:
    """A staged data set's folder by name (e.g. `sst2`, `airline_sentiment`)."""
    for root in dataset_search_path():
        candidate = root / name
        if (candidate / "labels.json").is_file():
            return candidate
    known = sorted(
        {
            p.name
            for root in dataset_search_path()
            if root.is_dir()
            for p in root.iterdir()
            if (p / "labels.json").is_file()
        }
    )
    raise EdgebertError(
        f"unknown dataset '{name}': known here: {', '.join(known) or 'none'} "
        "(set EDGEBERT_DATASETS to a folder of staged sets)"
    )


def dataset_folder(cfg) -> Path | None:
    """The folder of the recipe's `data.dataset` (None when it names files instead)."""
    if not cfg.dataset:
        return None
    try:
        return resolve_dataset(cfg.dataset)
    except EdgebertError as exc:
        raise EdgebertError(f"data.dataset: {exc}") from None


def find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in DATA_SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_label_names(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgebertError(f"{path}: cannot read label list ({exc})") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise EdgebertError(f"{path}: expected a JSON list of label names")
    if len(set(names)) != len(names):
        raise EdgebertError(f"{path}: label names repeat")
    return names


def _raw_records(path: Path, text_field: str, label_field: str | None):
    """Yield (line number, text, label) from a JSONL or CSV/TSV file; with no `label_field`
    (unlabeled text) the label is None."""
    fields = [f for f in (text_field, label_field) if f is not None]
    if not path.is_file():
        raise EdgebertError(f"data file not found: {path}")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix == ".jsonl":
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise EdgebertError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
                    if not isinstance(record, dict):
                        raise EdgebertError(f"{path}:{line_no}: expected a JSON object")
                    for key in fields:
                        if key not in record:
                            raise EdgebertError(f"{path}:{line_no}: missing field '{key}'")
                    yield (
                        line_no,
                        record[text_field],
                        (record[label_field] if label_field else None),
                    )
            else:
                reader = csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
                columns = reader.fieldnames or []
                for key in fields:
                    if key not in columns:
                        raise EdgebertError(
                            f"{path}:1: no '{key}' column (columns: {', '.join(columns) or 'none'})"
                        )
                for record in _csv_records(reader, path):
                    yield (
                        reader.line_num,
                        record[text_field],
                        (record[label_field] if label_field else None),
                    )
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _csv_records(reader: csv.DictReader, path: Path):
    """The rows of a CSV reader; a cell over the csv module's field limit (131,072
    characters) is a one-line error naming its line, not an internal error."""
    rows = iter(reader)
    while True:
        try:
            record = next(rows)
        except StopIteration:
            return
        except csv.Error:
            raise EdgebertError(
                f"{path}:{reader.line_num + 1}: a cell is over the CSV limit of "
                f"{csv.field_size_limit():,} characters (or its quoting is broken)"
            ) from None
        yield record


class BadRow(Exception):
    """One row a recipe cannot use (empty text, an unknown label...): its reason."""


def read_split(
    path: Path,
    label_names: Sequence[str],
    clean: Callable[[str], str],
    text_field: str = "text",
    label_field: str = "label",
    skipped: list[str] | None = None,
) -> Split:
    """Read, clean and validate one file. A bad row (empty text, unknown label) is a one-line
    error naming its line, or, given a `skipped` list (`data.on_bad_rows: skip`), is left out
    and recorded there as `FILE:LINE: reason`."""
    index = {name: i for i, name in enumerate(label_names)}
    texts: list[str] = []
    labels: list[int] = []
    kinds: set[type] = set()  # label types seen: ints and names never mix in one file
    for line_no, text, label in _raw_records(path, text_field, label_field):
        try:
            cleaned, value = _checked_row(text, label, clean, index, kinds, text_field)
        except BadRow as exc:
            if skipped is None:
                raise EdgebertError(f"{path}:{line_no}: {exc}") from None
            skipped.append(f"{path.name}:{line_no}: {exc}")
            continue
        texts.append(cleaned)
        labels.append(value)
    if not texts:
        raise EdgebertError(f"{path}: no rows")
    return Split(texts, labels, str(path))


def _check_label_type(label) -> None:
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise BadRow(f"label {label!r} is neither an int nor a name")


def _checked_row(text, label, clean, index: dict[str, int], kinds: set[type], text_field: str):
    """(cleaned text, label index) of one row; BadRow says what is wrong with it."""
    if not isinstance(text, str):
        raise BadRow(f"'{text_field}' must be a string")
    cleaned = clean(text)
    if not cleaned.strip():
        raise BadRow("empty text after cleaning")
    _check_label_type(label)
    if isinstance(label, str) and label.strip().lstrip("-").isdigit() and label not in index:
        label = int(label)  # CSV cells are strings; "2" means index 2
    if kinds and type(label) not in kinds:
        raise BadRow(f"mixed label types (earlier rows use {next(iter(kinds)).__name__})")
    kinds.add(type(label))
    if isinstance(label, int):
        if not 0 <= label < len(index):
            raise BadRow(f"label {label} out of range 0..{len(index) - 1}")
        return cleaned, label
    if label not in index:
        raise BadRow(f"unknown label '{label}' (labels: {', '.join(index)})")
    return cleaned, index[label]


def read_texts(path: Path, clean: Callable[[str], str], text_field: str = "text") -> list[str]:
    """Cleaned texts of an unlabeled JSONL or CSV/TSV file (a label column, if any, is not read).
    Rows empty after cleaning are skipped: unlabeled scrapes have them, and they teach nothing."""
    texts = []
    for line_no, text, _ in _raw_records(path, text_field, None):
        if not isinstance(text, str):
            raise EdgebertError(f"{path}:{line_no}: '{text_field}' must be a string")
        cleaned = clean(text)
        if cleaned.strip():
            texts.append(cleaned)
    if not texts:
        raise EdgebertError(f"{path}: no non-empty texts")
    return texts


def subsample(split: Split, max_rows: int | None, seed: int) -> Split:
    """A stratified, seeded subset, so a small run keeps the class balance of the full set."""
    if max_rows is None or max_rows >= len(split):
        return split
    indices = list(range(len(split)))
    try:
        kept, _ = train_test_split(
            indices, train_size=max_rows, stratify=split.labels, random_state=seed
        )
    except ValueError:  # a class too rare to stratify at this size
        kept, _ = train_test_split(indices, train_size=max_rows, random_state=seed)
    kept = sorted(kept)
    return Split([split.texts[i] for i in kept], [split.labels[i] for i in kept], split.source)


def carve_validation(
    train: Split, fraction: float, seed: int, label_names: Sequence[str] = ()
) -> tuple[Split, Split]:
    """Stratified train/validation split for sets that ship no validation file."""
    indices = list(range(len(train)))
    counts = Counter(train.labels)
    rare = [label for label, count in sorted(counts.items()) if count < 2]
    if rare:
        raise EdgebertError(
            f"{train.source}: label '{label_names[rare[0]] if label_names else rare[0]}' has "
            f"{counts[rare[0]]} row: a validation split needs 2 of each label; add rows or give "
            "data.validation"
        )
    try:
        kept, held = train_test_split(
            indices, test_size=fraction, stratify=train.labels, random_state=seed
        )
    except ValueError as exc:  # too few rows for the fraction to hold one of each label
        raise EdgebertError(
            f"{train.source}: cannot split off a stratified validation set ({exc}); "
            "give data.validation or a larger data.validation_fraction"
        ) from None
    pick = lambda ids, tag: Split(  # noqa: E731
        [train.texts[i] for i in sorted(ids)],
        [train.labels[i] for i in sorted(ids)],
        f"{train.source} ({tag})",
    )
    return pick(kept, "train part"), pick(held, f"held-out {fraction:.0%}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EncodedDataset(torch.utils.data.Dataset):
    """Token ids per row, unpadded; `collate` pads each batch to its own longest row."""

    def __init__(self, input_ids: list[list[int]], labels: list[int]):
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i], "row": i}


def encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Tokenize with the fast tokenizer in batch mode; return ids and how many rows were cut.

    Truncation keeps the final special token (e.g. [SEP]) so a cut row still looks like a
    sentence to the model.
    """
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)[
        "input_ids"
    ]
    truncated = 0
    out = []
    for row in ids:
        if len(row) > max_length:
            truncated += 1
            row = row[: max_length - 1] + row[-1:]
        out.append(row)
    return out, truncated


def make_collate(pad_token_id: int):
    """Dynamic padding: each batch is padded only to its own longest row."""

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
            attention[i, : len(row["input_ids"])] = 1
        if isinstance(rows[0]["labels"], list):  # token classification: a tag per position
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            for i, row in enumerate(rows):
                labels[i, : len(row["labels"])] = torch.tensor(row["labels"])
        else:
            labels = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if "row" in rows[0]:  # which training rows these are (for cached teacher logits)
            batch["row"] = torch.tensor([r["row"] for r in rows], dtype=torch.long)
        return batch

    return collate


def label_names_for(cfg, folder: Path | None, train_path: Path) -> list[str]:
    if isinstance(cfg.labels, list):
        if len(set(cfg.labels)) != len(cfg.labels):
            raise EdgebertError("data.labels: label names repeat")
        return list(cfg.labels)
    if isinstance(cfg.labels, Path):
        return read_label_names(cfg.labels)
    for candidate in ([folder / "labels.json"] if folder else []) + [
        train_path.parent / "labels.json"
    ]:
        if candidate.is_file():
            return read_label_names(candidate)
    return labels_in_file(train_path, cfg.text_field, cfg.label_field)


def labels_in_file(path: Path, text_field: str, label_field: str) -> list[str]:
    """Label names read from the training file itself, for data that comes with no list:
    the names in sorted order, or "0".."N" when the labels are indices."""
    seen = set()
    for line_no, _, label in _raw_records(path, text_field, label_field):
        try:
            _check_label_type(label)
        except BadRow as exc:
            raise EdgebertError(f"{path}:{line_no}: {exc}") from None
        if label != "":  # a row without a label is a bad row, not a class
            seen.add(label)
    if not seen:
        raise EdgebertError(f"{path}: no rows")
    if all(isinstance(v, int) and not isinstance(v, bool) or _is_index(v) for v in seen):
        return [str(i) for i in range(max(int(v) for v in seen) + 1)]
    return sorted(str(v) for v in seen)


def _is_index(value) -> bool:
    return isinstance(value, str) and value.strip().isdigit()

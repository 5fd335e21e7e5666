"""Token classification (NER) data: word/tag rows from CoNLL-style or JSONL files.

A split's `texts` are lists of words and its `labels` lists of tag ids (BIO tags), so the rest of
the pipeline (run directory, stages, subsampling by row) handles them like sentences. Subword
alignment follows the usual rule: a word's first piece carries its tag, the other pieces and the
special tokens get -100 and are ignored by the loss and the metrics.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from bench.files import read_lines
from compress.data.splits import SPLIT_NAMES, Split, TaskData, dataset_folder, find_split_file
from compress.errors import EdgebertError

TAG = re.compile(r"^(O|[BI]-\S+)$")
IGNORE = -100


def _rows_conll(path: Path, lines: list[str]):
    words, tags, start = [], [], 1
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                yield start, words, tags
            words, tags, start = [], [], number + 1
            continue
        if len(parts) < 2:
            raise EdgebertError(f"{path}:{number}: expected 'WORD ... TAG', got {line.strip()!r}")
        words.append(parts[0])
        tags.append(parts[-1])
    if words:
        yield start, words, tags


def _rows_jsonl(path: Path, lines: list[str]):
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            words, tags = record["tokens"], record["tags"]
        except (ValueError, KeyError, TypeError):
            raise EdgebertError(
                f"{path}:{number}: expected an object with 'tokens' and 'tags' lists"
            ) from None
        if not isinstance(words, list) or not isinstance(tags, list) or len(words) != len(tags):
            raise EdgebertError(
                f"{path}:{number}: 'tokens' and 'tags' must be lists of equal length"
            )
        yield number, [str(w) for w in words], [str(t) for t in tags]


def read_tagged(path: Path) -> list[tuple[int, list[str], list[str]]]:
    """(line, words, tag names) per sentence; tags checked to be BIO."""
    lines = read_lines(path, missing="data file not found")
    reader = _rows_jsonl if path.suffix == ".jsonl" else _rows_conll
    rows = list(reader(path, lines))
    for line, _, tags in rows:
        bad = next((t for t in tags if not TAG.match(t)), None)
        if bad is not None:
            raise EdgebertError(f"{path}:{line}: tag {bad!r} is not BIO (O, B-TYPE or I-TYPE)")
    if not rows:
        raise EdgebertError(f"{path}: no tagged sentences")
    return rows


def _label_names(cfg, train_path: Path, rows) -> list[str]:
    if isinstance(cfg.labels, list):
        return list(cfg.labels)
    path = cfg.labels if isinstance(cfg.labels, Path) else train_path.parent / "labels.json"
    if path.is_file():
        try:
            return [str(x) for x in json.loads(path.read_text(encoding="utf-8"))]
        except (OSError, ValueError) as exc:
            raise EdgebertError(f"{path}: unreadable label list ({exc})") from None
    seen = sorted({t for _, _, tags in rows for t in tags} - {"O"}, key=lambda t: (t[2:], t[0]))
    return ["O", *seen]


def _split(path: Path, rows, label_names: list[str]) -> Split:
    index = {name: i for i, name in enumerate(label_names)}
    labels = []
    for line, _, tags in rows:
        unknown = next((t for t in tags if t not in index), None)
        if unknown is not None:
            raise EdgebertError(
                f"{path}:{line}: tag {unknown!r} is not among the labels {label_names}"
            )
        labels.append([index[t] for t in tags])
    return Split([words for _, words, _ in rows], labels, str(path))


def _sample(split: Split, rows: int | None, seed: int) -> Split:
    if rows is None or rows >= len(split):
        return split
    kept = sorted(random.Random(seed).sample(range(len(split)), rows))
    return Split([split.texts[i] for i in kept], [split.labels[i] for i in kept], split.source)


def load_token_task(cfg, seed: int) -> TaskData:
    """The recipe's `data:` for `task: token-classification` (cleaning does not apply: words
    are taken as the file gives them)."""
    folder = dataset_folder(cfg)
    paths = {
        s: getattr(cfg, s) or (find_split_file(folder, s) if folder else None) for s in SPLIT_NAMES
    }
    if paths["train"] is None:
        raise EdgebertError(f"dataset '{cfg.dataset}' has no train split")
    rows = {s: read_tagged(p) for s, p in paths.items() if p is not None}
    label_names = _label_names(cfg, paths["train"], rows["train"])
    splits = {s: _split(paths[s], r, label_names) for s, r in rows.items()}
    train, validation = splits["train"], splits.get("validation")
    if validation is None:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        cut = max(1, int(len(order) * cfg.validation_fraction))
        held, kept = sorted(order[:cut]), sorted(order[cut:])
        validation = Split(
            [train.texts[i] for i in held], [train.labels[i] for i in held], train.source
        )
        train = Split([train.texts[i] for i in kept], [train.labels[i] for i in kept], train.source)
    return TaskData(
        label_names,
        _sample(train, cfg.max_train_rows, seed),
        _sample(validation, cfg.max_eval_rows, seed),
        _sample(splits["test"], cfg.max_eval_rows, seed) if "test" in splits else None,
        [p for p in paths.values() if p is not None],
    )


def encode_words(
    tokenizer, words: Sequence[Sequence[str]], tags: Sequence[Sequence[int]], max_length: int
) -> tuple[list[list[int]], list[list[int]], int]:
    """Subword ids and aligned labels (first piece of a word: its tag; the rest: -100);
    returns (ids, labels, rows truncated). Rows are cut as `compress.data.splits.encode` cuts them,
    keeping the closing special token."""
    encoded = tokenizer(
        [list(w) for w in words], is_split_into_words=True, truncation=False, verbose=False
    )
    ids, labels, truncated = [], [], 0
    for i, row_tags in enumerate(tags):
        previous = None
        aligned = []
        for word in encoded.word_ids(i):
            aligned.append(IGNORE if word is None or word == previous else row_tags[word])
            previous = word
        row = encoded["input_ids"][i]
        if len(row) > max_length:
            truncated += 1
            row, aligned = (
                row[: max_length - 1] + row[-1:],
                aligned[: max_length - 1] + aligned[-1:],
            )
        ids.append(row)
        labels.append(aligned)
    return ids, labels, truncated


def word_level(
    label_rows: Sequence[Sequence[int]], logit_rows
) -> tuple[list[list[int]], list[list[int]]]:
    """(true tags, predicted tags) at the positions that carry a word's tag."""
    true, pred = [], []
    for labels, logits in zip(label_rows, logit_rows):
        keep = [j for j, t in enumerate(labels) if t != IGNORE]
        true.append([labels[j] for j in keep])
        pred.append([int(logits[j].argmax()) for j in keep])
    return true, pred

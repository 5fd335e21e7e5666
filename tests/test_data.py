import json

import pytest

from compress.data.splits import (
    Split,
    carve_validation,
    encode,
    read_split,
    resolve_dataset,
    subsample,
)
from compress.errors import EdgebertError

LABELS = ["negative", "neutral", "positive"]
same = lambda s: s  # noqa: E731


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_jsonl_with_int_labels(tmp_path):
    path = write(
        tmp_path, "a.jsonl", '{"text": "good", "label": 2}\n\n{"text": "bad", "label": 0}\n'
    )
    split = read_split(path, LABELS, same)
    assert split.texts == ["good", "bad"] and split.labels == [2, 0]


def test_csv_with_label_names_and_custom_columns(tmp_path):
    path = write(tmp_path, "a.csv", 'review,sentiment\n"fine, ok",neutral\nawful,negative\n')
    split = read_split(path, LABELS, same, text_field="review", label_field="sentiment")
    assert split.texts == ["fine, ok", "awful"] and split.labels == [1, 0]


def test_csv_numeric_labels_are_indices(tmp_path):
    path = write(tmp_path, "a.tsv", "text\tlabel\nyes\t2\n")
    assert read_split(path, LABELS, same).labels == [2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "e.jsonl",
            '{"text": "ok", "label": 1}\n{"text": "  ", "label": 1}\n',
            r"e.jsonl:2: empty text",
        ),
        ("r.jsonl", '{"text": "ok", "label": 3}\n', r"r.jsonl:1: label 3 out of range 0..2"),
        ("n.jsonl", '{"text": "ok", "label": "happy"}\n', r"n.jsonl:1: unknown label 'happy'"),
        (
            "m.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b", "label": "neutral"}\n',
            r"m.jsonl:2: mixed label types",
        ),
        (
            "j.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n',
            r"j.jsonl:2: invalid JSON",
        ),
        ("f.jsonl", '{"body": "a", "label": 1}\n', r"f.jsonl:1: missing field 'text'"),
        ("c.csv", "body,label\nx,1\n", r"c.csv:1: no 'text' column"),
        ("z.jsonl", "", r"z.jsonl: no rows"),
        ("b.jsonl", '{"text": "a", "label": true}\n', r"b.jsonl:1: label True is neither"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(EdgebertError, match=message):
        read_split(path, LABELS, same)


def test_non_utf8_and_missing_files(tmp_path):
    path = write(tmp_path, "l1.jsonl", '{"text": "caf\u00e9", "label": 1}\n', encoding="latin-1")
    with pytest.raises(EdgebertError, match="not UTF-8"):
        read_split(path, LABELS, same)
    with pytest.raises(EdgebertError, match="data file not found"):
        read_split(tmp_path / "nope.jsonl", LABELS, same)


def test_stratified_subsample_and_carved_validation_keep_class_balance():
    split = Split([f"t{i}" for i in range(1000)], [0] * 800 + [1] * 200, "x")
    small = subsample(split, 100, seed=3)
    assert len(small) == 100 and small.labels.count(1) == 20
    assert subsample(split, 100, seed=3).texts == small.texts  # deterministic
    train, held = carve_validation(split, 0.1, seed=3)
    assert len(held) == 100 and held.labels.count(1) == 20
    assert not set(train.texts) & set(held.texts)


def test_staged_sample_resolves_by_name():
    folder = resolve_dataset("sst2-sample")
    assert json.loads((folder / "labels.json").read_text()) == ["negative", "positive"]
    with pytest.raises(EdgebertError, match="unknown dataset 'nope'"):
        resolve_dataset("nope")


def test_truncation_keeps_the_final_special_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ids, truncated = encode(tokenizer, ["a " * 50, "short"], max_length=10)
    assert truncated == 1
    assert len(ids[0]) == 10 and ids[0][-1] == tokenizer.sep_token_id
    assert ids[1][0] == tokenizer.cls_token_id and ids[1][-1] == tokenizer.sep_token_id

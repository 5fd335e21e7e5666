"""Vocabulary pruning: same tokens and logits on the corpus, a smaller embedding, reloadable."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from compress.data.vocab import VocabConfig, prune_vocabulary
from compress.errors import EdgebertError
from compress.models.model_io import load_classifier, load_tokenizer, save_classifier
from tests.conftest import run_ok, sample_rows, tiny_recipe

CORPUS = [r["text"] for r in sample_rows("train", 60, seed=3)]


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_pruned_vocabulary_keeps_corpus_tokens_and_logits(tmp_path, tiny_model_dir):
    model = load_classifier(tiny_model_dir).eval()
    tokenizer = load_tokenizer(tiny_model_dir)
    before = _logits(model, tokenizer, CORPUS[:8])
    old_tokens = [tokenizer.tokenize(t) for t in CORPUS]

    new_tokenizer, report = prune_vocabulary(
        model, tokenizer, CORPUS, VocabConfig(keep_characters=False)
    )

    assert report["vocab_before"] == 600 and report["vocab_after"] < 450
    assert len(new_tokenizer) == report["vocab_after"] == model.config.vocab_size
    assert model.get_input_embeddings().weight.shape == (report["vocab_after"], 32)
    assert report["parameters_before"] - report["parameters_after"] == 32 * (
        600 - report["vocab_after"]
    )
    assert [new_tokenizer.tokenize(t) for t in CORPUS] == old_tokens
    assert new_tokenizer.pad_token_id == 0 and model.config.pad_token_id == 0
    torch.testing.assert_close(_logits(model, new_tokenizer, CORPUS[:8]), before, rtol=0, atol=1e-6)

    target = save_classifier(model, new_tokenizer, tmp_path / "pruned", {})
    reloaded = AutoModelForSequenceClassification.from_pretrained(target).eval()
    again = load_tokenizer(target)
    assert len(again) == report["vocab_after"]
    vocab_txt = (target / "vocab.txt").read_text().splitlines()
    assert len(vocab_txt) == report["vocab_after"] and vocab_txt[0] == "[PAD]"
    torch.testing.assert_close(_logits(reloaded, again, CORPUS[:8]), before, rtol=0, atol=1e-6)


def test_kept_characters_spell_out_unseen_words(tiny_model_dir):
    model = load_classifier(tiny_model_dir)
    tokenizer = load_tokenizer(tiny_model_dir)
    unseen = "zqxv bewildering"
    with_chars, _ = prune_vocabulary(model, tokenizer, CORPUS[:5], VocabConfig())
    assert "[UNK]" not in with_chars.tokenize(unseen)
    bare, _ = prune_vocabulary(
        load_classifier(tiny_model_dir), tokenizer, CORPUS[:5], VocabConfig(keep_characters=False)
    )
    assert "[UNK]" in bare.tokenize(unseen)


def test_min_count_keeps_fewer_tokens(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    sizes = [
        prune_vocabulary(
            load_classifier(tiny_model_dir),
            tokenizer,
            CORPUS,
            VocabConfig(min_count=n, keep_characters=False),
        )[1]["vocab_after"]
        for n in (1, 3)
    ]
    assert sizes[1] < sizes[0]


def test_non_wordpiece_tokenizer_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "<unk>": 2}, merges=[], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    with pytest.raises(EdgebertError, match="vocab: pruning supports WordPiece tokenizers.*BPE"):
        prune_vocabulary(None, tokenizer, ["a b"], VocabConfig())


def test_vocab_pruning_in_a_recipe_exports_and_passes_parity(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = tmp_path / "vocab.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1).replace(
            "    select_best: macro_f1\n", "    select_best: macro_f1\n    vocab: {min_count: 2}\n"
        )
        + "  - type: export\n    parity: {rows: 64}\n"
    )
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    vocab = metrics["finetune"]["vocab"]
    assert vocab["vocab_before"] == 600 and vocab["vocab_after"] < 600
    assert f"vocabulary 600 -> {vocab['vocab_after']:,} tokens" in err
    assert metrics["export"]["parity"]["fp32"]["passed"]
    saved = json.loads((run_dir / "stages/00-finetune/model/config.json").read_text())
    assert saved["vocab_size"] == vocab["vocab_after"]


def test_added_characters_replace_unk_and_start_at_the_mean_embedding(tiny_model_dir):
    model = load_classifier(tiny_model_dir).eval()
    tokenizer = load_tokenizer(tiny_model_dir)
    texts = ["酒店很好，服务很好", "房间太小了，不好", "good 酒店"]
    assert tokenizer.tokenize(texts[0]).count("[UNK]") >= 6
    mean = model.get_input_embeddings().weight.detach().mean(0)
    config = VocabConfig(min_count=1, add_characters=True, keep_characters=False)
    new_tokenizer, report = prune_vocabulary(model, tokenizer, texts, config)
    distinct = set("酒店很好服务房间太小了不")
    assert report["characters_added"] == len(distinct)  # letters only: "，" is punctuation
    assert "[UNK]" not in new_tokenizer.tokenize(texts[0].replace("，", ""))
    assert new_tokenizer.tokenize(texts[1])[:4] == ["房", "间", "太", "小"]
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == report["vocab_after"] == len(new_tokenizer)
    added_rows = [new_tokenizer.convert_tokens_to_ids(ch) for ch in sorted(distinct)]
    torch.testing.assert_close(embeddings[added_rows], mean.expand(len(added_rows), -1))
    assert _logits(model, new_tokenizer, texts).shape == (3, 2)
    twice, _ = prune_vocabulary(
        load_classifier(tiny_model_dir),
        tokenizer,
        texts * 2,
        VocabConfig(min_count=3, add_characters=True),
    )
    assert "[UNK]" in twice.tokenize("房")  # seen twice: under min_count 3, not added


def test_vocab_pruned_student_distils_from_a_live_teacher_only_with_retokenize(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    def recipe(retokenize: bool) -> str:
        return (
            tiny_recipe(tiny_model_dir, tiny_data, epochs=1)
            + f"""  - type: train
    name: student
    model: {tiny_model_dir}
    vocab: {{min_count: 2}}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1, max_steps: 3}}
    with:
      - distill: {{teacher: "@finetune", retokenize: {str(retokenize).lower()}}}
"""
        )

    refused = tmp_path / "refused.yaml"
    refused.write_text(recipe(False))
    code, _, err = run_cli("run", refused, "--out", tmp_path / "r1")
    assert code == 2 and "distill.retokenize: teacher and student tokenizers differ" in err
    allowed = tmp_path / "allowed.yaml"
    allowed.write_text(recipe(True))
    run_dir, metrics, _ = run_ok(run_cli, allowed, tmp_path / "r2")
    assert metrics["student"]["steps"] == 3 and metrics["student"]["vocab"]["vocab_after"] < 600
    # The teacher read the texts with its own tokenizer, not the student's renumbered ids: its
    # cached logits are what the teacher model says about each cleaned training text.
    from safetensors.torch import load_file

    from bench.cleaning import make_cleaner
    from bench.runtime import open_model

    (cache,) = (run_dir / "stages" / "01-student").glob("teacher_logits-*.safetensors")
    cached = load_file(str(cache))["logits"].numpy()
    clean = make_cleaner(["strip_html", "nfkc", "collapse_whitespace"])
    rows = [json.loads(line) for line in (tiny_data / "train.jsonl").read_text().splitlines()]
    teacher = open_model(run_dir / "stages" / "00-finetune" / "model")
    own = teacher.logits([clean(r["text"]) for r in rows])
    assert cached.shape == own.shape == (400, 2)
    assert abs(cached - own).max() < 1e-4

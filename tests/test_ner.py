"""Token classification (NER): CoNLL data, subword alignment, entity F1, export, bench, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.metrics import entity_spans, token_metrics
from compress.data.ner_data import IGNORE, encode_words, read_tagged
from compress.errors import EdgebertError
from tests.conftest import run_ok

SAMPLE = Path(__file__).parent / "data" / "ner-sample"
ENTITY_F1_FLOOR = 0.15  # names never seen in training: measured 0.23 after 8 epochs
LABELS = json.loads((SAMPLE / "labels.json").read_text())


def test_entity_spans_and_metrics_by_hand():
    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "B-ORG"]) == {
        ("PER", 0, 2),
        ("LOC", 3, 4),
        ("LOC", 4, 6),
        ("ORG", 6, 7),
    }
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    true = [[1, 2, 0, 3], [3, 4, 0, 0]]  # PER(0-2) LOC(3) | LOC(0-2)
    pred = [[1, 2, 0, 0], [3, 0, 0, 1]]  # PER(0-2)       | LOC(0) PER(3)
    m = token_metrics(true, pred, names)
    assert m["entity_precision"] == m["entity_recall"] == m["entity_f1"] == pytest.approx(1 / 3)
    assert m["per_class"]["PER"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
    }
    assert m["per_class"]["LOC"]["f1"] == 0.0 and m["macro_f1"] == pytest.approx(1 / 3)
    assert m["accuracy"] == 5 / 8 and m["n"] == 8


def test_conll_rows_and_errors(tmp_path):
    rows = read_tagged(SAMPLE / "train.conll")
    assert len(rows) == 240 and rows[0][1][:2] == ["Delta", "opened"] and rows[0][2][0] == "B-ORG"
    bad = tmp_path / "bad.conll"
    bad.write_text("Anna B-PER\nwent O\n\nto O\nParis LOCATION\n")
    with pytest.raises(EdgebertError, match=r"bad.conll:4: tag 'LOCATION' is not BIO"):
        read_tagged(bad)
    bad.write_text("Anna\n")
    with pytest.raises(EdgebertError, match=r"bad.conll:1: expected 'WORD ... TAG'"):
        read_tagged(bad)


def test_first_subword_carries_the_tag(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    words = [["Kenji", "flew", "to", "Oslo"]]
    ids, labels, truncated = encode_words(tokenizer, words, [[1, 0, 0, 3]], 32)
    pieces = tokenizer.convert_ids_to_tokens(ids[0])
    assert labels[0][0] == IGNORE and labels[0][-1] == IGNORE  # [CLS], [SEP]
    tagged = [(p, t) for p, t in zip(pieces, labels[0]) if t != IGNORE]
    assert [t for _, t in tagged] == [1, 0, 0, 3] and truncated == 0
    assert len(pieces) > 6  # some words were split: their later pieces are ignored


@pytest.fixture()
def tiny_tagger(tmp_path, tiny_model_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=600,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    folder = tmp_path / "tagger"
    BertForTokenClassification(config).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(folder)
    return folder


def _entities(rows) -> set[str]:
    return {" ".join(words[a:b]) for _, words, tags in rows for _, a, b in entity_spans(tags)}


def test_validation_shares_no_sentence_and_no_name_with_training():
    train, validation = (
        read_tagged(SAMPLE / "train.conll"),
        read_tagged(SAMPLE / "validation.conll"),
    )
    assert len(validation) == 60
    assert not {tuple(w) for _, w, _ in train} & {tuple(w) for _, w, _ in validation}
    assert not _entities(train) & _entities(validation)


def test_ner_recipe_trains_exports_benches_and_predicts(tmp_path, tiny_tagger, run_cli):
    recipe = tmp_path / "ner.yaml"
    recipe.write_text(f"""
name: ner
task: token-classification
data:
  train: {SAMPLE / "train.conll"}
  validation: {SAMPLE / "validation.conll"}
  max_length: 48
stages:
  - type: finetune
    model: {tiny_tagger}
    training: {{lr: 3.0e-3, batch_size: 16, epochs: 8, warmup_ratio: 0.1, seed: 3}}
    select_best: entity_f1
  - type: export
    quantize: [dynamic]
    parity: {{rows: 32, min_label_agreement: 0.9}}
  - type: bench
    batch_sizes: [1]
    seq_lengths: [32]
    threads: 1
    min_seconds: 0.02
    traffic_batch_size: 16
""")
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    validation = metrics["finetune"]["validation"]
    # unseen names in seen contexts: the tagger must learn "flew from X", not the names
    assert validation["entity_f1"] > ENTITY_F1_FLOOR, validation
    assert set(validation["per_class"]) == {"PER", "LOC", "ORG"}
    assert metrics["export"]["parity"]["fp32"]["passed"]
    report = json.loads((run_dir / "stages/02-bench/report.json").read_text())
    fp32 = next(m for m in report["models"] if m["name"] == "export:fp32")
    assert fp32["accuracy"]["entity_f1"] == pytest.approx(validation["entity_f1"], abs=1e-6)
    assert fp32["latency"][0]["macs"] > 0 and fp32["traffic"]["texts"] == 60
    sentence = "my bag never arrived in New York and nobody answered ."  # a training sentence
    code, out, _ = run_cli("predict", run_dir / "stages/01-export/onnx/model.onnx", sentence)
    assert code == 0
    answer = json.loads(out)
    assert answer["tags"] == ["O"] * 5 + ["B-LOC", "I-LOC"] + ["O"] * 4
    assert answer["entities"] == [
        {"type": "LOC", "text": "New York", "start_word": 5, "end_word": 7}
    ]


def test_token_task_refuses_modifiers(tmp_path, tiny_tagger, run_cli):
    recipe = tmp_path / "ner-kd.yaml"
    recipe.write_text(f"""
name: ner
task: token-classification
data:
  train: {SAMPLE / "train.conll"}
stages:
  - type: train
    model: {tiny_tagger}
    training: {{epochs: 1}}
    with:
      - prune_structured: {{heads: 0.5}}
""")
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert (
        code == 2 and "with.prune_structured: token classification trains without modifiers" in err
    )

"""The pipeline is architecture-agnostic: BERT, DistilBERT, RoBERTa, ALBERT, MPNet and XLM-R
(tiny random configs) each fine-tune, distil from a BERT teacher, export and pass parity."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import run_ok

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
ARCHITECTURES = {
    "bert": SIZES,
    "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
    "roberta": SIZES | dict(max_position_embeddings=130, type_vocab_size=1),
    "albert": SIZES | dict(embedding_size=16),
    "mpnet": SIZES,
    "xlm-roberta": SIZES | dict(max_position_embeddings=130, type_vocab_size=1),
}


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_each_encoder_finetunes_distils_exports_and_passes_parity(
    model_type, tmp_path, tiny_model_dir, tiny_data, run_cli
):
    import torch

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))  # one WordPiece vocab for all
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
        **ARCHITECTURES[model_type],
    )
    torch.manual_seed(0)
    model_dir = tmp_path / model_type
    AutoModelForSequenceClassification.from_config(config).save_pretrained(
        model_dir, safe_serialization=True
    )
    tokenizer.save_pretrained(model_dir)
    recipe = tmp_path / "arch.yaml"
    recipe.write_text(f"""
name: arch
data:
  train: {tiny_data / "train.jsonl"}
  validation: {tiny_data / "validation.jsonl"}
  max_length: 32
stages:
  - type: finetune
    model: {tiny_model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1, max_steps: 2}}
  - type: train
    name: student
    model: {model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1, max_steps: 2}}
    with:
      - distill: {{teacher: "@finetune", temperature: 2.0, alpha: 0.5}}
  - type: export
    parity: {{rows: 32}}
""")
    run_dir, metrics, _ = run_ok(run_cli, recipe, tmp_path / "runs")
    assert metrics["student"]["steps"] == 2 and metrics["student"]["validation"]["n"] == 100
    parity = metrics["export"]["parity"]["fp32"]
    assert parity["passed"] and parity["max_abs_diff"] < 1e-4 and parity["label_agreement"] == 1.0
    saved = json.loads((run_dir / "stages/01-student/model/config.json").read_text())
    assert saved["model_type"] == model_type

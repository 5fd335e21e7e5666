"""Pooling heads (`head: {pooling: ...}`): they pool over real tokens only, survive save/load,
export to ONNX with parity, and come out of a recipe run."""

import json

import numpy as np
import pytest
import torch

from bench.heads import POOLINGS, pool_hidden, with_pooling
from bench.runtime import open_model
from compress.models.model_io import load_classifier, load_tokenizer, save_classifier
from export.options import ExportOptions, Parity
from export.pipeline import export_model
from tests.conftest import sample_rows, tiny_recipe

TEXTS = [r["text"] for r in sample_rows("validation", 128, seed=3)]


def test_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, -1.0], [3.0, 5.0], [100.0, 100.0]]])  # last position padded
    mask = torch.tensor([[1, 1, 0]])
    assert pool_hidden(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool_hidden(hidden, mask, "max").tolist() == [[3.0, 5.0]]
    assert pool_hidden(hidden, mask, "cls_mean").tolist() == [[1.0, -1.0, 2.0, 2.0]]
    with pytest.raises(ValueError, match="expected one of"):
        pool_hidden(hidden, mask, "avg")


@pytest.fixture(scope="module", params=[p for p in POOLINGS if p != "cls"])
def pooled_dir(request, varied_model_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = with_pooling(load_classifier(varied_model_dir), request.param)
    folder = tmp_path_factory.mktemp(f"pooled-{request.param}")
    meta = {"labels": ["negative", "positive"], "max_length": 32, "clean": []}
    return save_classifier(model, load_tokenizer(varied_model_dir), folder / "model", meta)


def test_saved_head_reloads_with_its_pooling(pooled_dir):
    config = json.loads((pooled_dir / "config.json").read_text())
    reloaded = load_classifier(pooled_dir).eval()
    assert type(reloaded).__name__ == config["architectures"][0]
    assert config["classifier_pooling"] in ("mean", "max", "cls_mean")
    width = 64 if config["classifier_pooling"] == "cls_mean" else 32
    assert reloaded.classifier.in_features == width and reloaded.bert.pooler is None
    # A row's logits do not depend on how much padding its batch adds.
    tokenizer = load_tokenizer(pooled_dir)
    short, long = "a fine film", "a fine film " + "with far too many words in it " * 3
    alone = reloaded(**tokenizer([short], return_tensors="pt")).logits
    padded = reloaded(**tokenizer([short, long], padding=True, return_tensors="pt")).logits[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_pooled_head_exports_with_parity(pooled_dir, tmp_path):
    options = ExportOptions(quantize=[], formats=["onnx"], parity=Parity(rows=128))
    exported = export_model(pooled_dir, tmp_path / "onnx", TEXTS, options, log=lambda _: None)
    for name in ("fp32", "fp32_fused"):
        assert exported.parity[name]["max_abs_diff"] < 1e-4, exported.parity[name]
        assert exported.parity[name]["label_agreement"] == 1.0
    labels = open_model(exported.files["fp32"]).logits(TEXTS).argmax(-1)
    assert 0 < labels.sum() < len(TEXTS)  # the head's labels vary, so agreement could fail


def test_student_head_survives_distill_prune_and_qat(run_cli, tiny_model_dir, tiny_data, tmp_path):
    """A [CLS]+mean student, distilled from a [CLS] teacher while heads are pruned and INT8 QAT
    runs: the QAT graph computes the pooled head as the fake-quant model does."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1)
        + """  - type: train
    name: student
    model: "@finetune"
    head: {pooling: cls_mean}
    training: {lr: 5.0e-3, batch_size: 16, epochs: 2, seed: 2}
    with:
      - distill: {teacher: "@finetune", temperature: 2.0, alpha: 0.5}
      - prune_structured: {heads: 0.5, ffn: 0.5, start_epoch: 1, end_epoch: 1, scoring_batches: 2}
      - qat: {start_epoch: 2, freeze_observers_after: 0.5}
  - type: export
    quantize: [dynamic]
    parity: {rows: 64, min_label_agreement: 0.5, enforce: [fp32]}
"""
    )
    code, stdout, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 0, err
    run_dir = tmp_path / "runs" / stdout.strip().split("/")[-1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model_dir = run_dir / "stages" / "01-student" / "model"
    assert json.loads((model_dir / "config.json").read_text())["classifier_pooling"] == "cls_mean"
    assert load_classifier(model_dir).classifier.in_features == 64
    qat = metrics["student"]["modifiers"]["qat"]
    assert qat["ort_label_agreement_with_fake_quant"] >= 0.95, qat
    predicted = [sum(c) for c in zip(*metrics["student"]["validation"]["confusion_matrix"])]
    assert all(count > 0 for count in predicted), predicted  # labels vary: agreement can fail
    torch_logits = open_model(model_dir).logits(TEXTS[:32])
    onnx_logits = open_model(run_dir / "stages" / "02-export" / "onnx" / "model.onnx").logits(
        TEXTS[:32]
    )
    assert np.abs(torch_logits - onnx_logits).max() < 1e-4


def test_unknown_pooling_names_the_field(run_cli, tiny_model_dir, tiny_data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data).replace(
            "    select_best: macro_f1", "    select_best: macro_f1\n    head: {pooling: avg}"
        )
    )
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 2 and "stages[0].head.pooling" in err and "mean" in err, err

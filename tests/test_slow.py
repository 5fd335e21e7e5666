"""Real-model checks (minutes each): run on purpose with `python -m pytest -m slow`."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_reaches_85_percent_on_sst2_validation(tmp_path, run_cli):
    code, out, err = run_cli("run", "quickstart", "--out", tmp_path)
    assert code == 0, err
    run_dir = tmp_path / out.strip().split("/")[-1]
    validation = json.loads((run_dir / "metrics.json").read_text())["finetune"]["validation"]
    assert validation["n"] == 872
    assert validation["accuracy"] >= 0.85


def test_minilm_exports_with_fp32_parity_and_int8_ops(tmp_path):
    from compress.model_io import load_classifier, load_tokenizer
    from compress.model_names import resolve_model
    from export.options import ExportOptions, Parity
    from export.pipeline import export_model
    from tests.conftest import sample_rows

    source = resolve_model("minilm-l6")
    model = load_classifier(source, ["negative", "positive"])
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    load_tokenizer(source).save_pretrained(tmp_path / "model")
    texts = [r["text"] for r in sample_rows("validation", 128)]
    result = export_model(
        tmp_path / "model",
        tmp_path / "onnx",
        texts,
        ExportOptions(quantize=["dynamic"], parity=Parity(min_label_agreement=0.9)),
        log=lambda _: None,
    )
    assert result.parity["fp32"]["max_abs_diff"] < 1e-4
    assert result.op_counts["fp32_fused"]["Attention"] == 6
    assert result.sizes["dynamic_int8"] < result.sizes["fp32"] / 3.5

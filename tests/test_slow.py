"""Real-model checks (minutes each): run on purpose with `python -m pytest -m slow`."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_runs_the_whole_product(tmp_path, run_cli):
    """teacher -> compact QAT student -> ONNX/.ort -> bench against Optimum INT8 -> summary."""
    code, out, err = run_cli("run", "quickstart", "--out", tmp_path)
    assert code == 0, err
    run_dir = tmp_path / out.strip().split("/")[-1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics) == ["teacher", "student", "export", "bench"]
    assert metrics["teacher"]["validation"]["n"] == 872
    assert metrics["teacher"]["validation"]["accuracy"] >= 0.83
    files = metrics["export"]["files"]
    assert {"fp32", "dynamic_int8", "qat_int8", "qat_int8_ort"} <= set(files)
    assert all(Path(path).is_file() for path in files.values())
    report = json.loads((run_dir / "stages" / "03-bench" / "report.json").read_text())
    assert report["baseline"] == "teacher:optimum_dynamic_int8"
    student = next(m for m in report["models"] if m["name"] == "student:qat_int8")
    for latency in student["latency"]:  # batch 1 and batch 32
        assert latency["ratio_to_baseline_p50"] >= 2.0, latency
    teacher = metrics["teacher"]["validation"]["accuracy"]
    assert student["accuracy"]["accuracy"] >= teacher - 0.02  # issue 25: within 2 points
    assert (run_dir / "stages" / "03-bench" / "report.html").is_file()
    summary = (run_dir / "summary.txt").read_text()
    assert summary.strip() in err and "ship:" in summary and "edgebert predict" in summary


def test_minilm_exports_with_fp32_parity_and_int8_ops(tmp_path):
    from compress.models.model_io import load_classifier, load_tokenizer
    from compress.models.names import resolve_model
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

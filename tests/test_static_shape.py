"""`export --static-shape`: a fixed-shape copy of the shipped file for phone accelerators,
checked against the dynamic file, opened by predict and timed by bench at its shape."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort

from bench.runtime import open_model
from tests.conftest import sample_rows

TEXTS = [r["text"] for r in sample_rows("validation", 40, seed=9)]


def test_static_shape_file_is_fixed_checked_and_runs(tmp_path, varied_model_dir, run_cli):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "onnx"
    code, stdout, err = run_cli(
        "export", varied_model_dir, "--out", out, "--quantize", "dynamic", "--texts", texts,
        "--min-label-agreement", "0", "--static-shape", "2x16",
    )  # fmt: skip
    assert code == 0, err
    static = out / "model_dynamic_int8_static_2x16.onnx"
    assert "static_2x16\t" in stdout and str(static) in stdout
    assert "static shape 2x16 (for NNAPI (Android), Core ML (iOS) and QNN" in err
    assert "labels agree 100.00%" in err
    graph = onnx.load(str(static)).graph
    for graph_input in graph.input:
        assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [2, 16]
    session = ort.InferenceSession(str(static), providers=["CPUExecutionProvider"])
    runner = open_model(out / "model_dynamic_int8.onnx")
    feeds = runner.encode(TEXTS[:2], pad_to=16)
    got = session.run(["logits"], feeds)[0]
    assert np.allclose(got, runner.run(feeds), atol=1e-5)
    fixed = open_model(static)
    assert fixed.fixed_shape == (2, 16)
    logits = fixed.logits(TEXTS[:5])  # an odd count: the last batch is filled, then trimmed
    assert logits.shape == (5, 2)
    code, stdout, err = run_cli("predict", static, TEXTS[0])
    assert code == 0, err
    assert json.loads(stdout)["label"] in ("negative", "positive")
    report = tmp_path / "bench"
    code, _, err = run_cli(
        "bench", f"static={static}", "--texts", texts, "--batch", "2", "--seq", "16",
        "--min-seconds", "0.05", "--traffic-batch", "0", "--out", report,
    )  # fmt: skip
    assert code == 0, err
    timed = json.loads((report / "report.json").read_text())["models"][0]["latency"]
    assert [(t["batch_size"], t["seq_length"]) for t in timed] == [(2, 16)]
    code, _, err = run_cli(
        "bench", f"static={static}", "--texts", texts, "--batch", "1", "--seq", "16",
        "--min-seconds", "0.05", "--traffic-batch", "0", "--out", report,
    )  # fmt: skip
    assert code == 2 and "takes batch 2 x seq 16 only: time it with --batch 2 --seq 16" in err


def test_a_bad_static_shape_is_one_line(tmp_path, tiny_onnx, run_cli):
    code, _, err = run_cli("export", tiny_onnx, "--static-shape", "64")
    assert code == 2
    assert (
        err.strip() == "edgebert: error: --static-shape: expected BATCHxSEQ such as 1x64, got '64'"
    )

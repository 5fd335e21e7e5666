"""ONNX export, PTQ, parity and the .ort format on a tiny random BERT."""

import json

import numpy as np
import pytest

from bench.runtime import open_model
from export.errors import ExportError
from export.onnx_export import OPSET, export_onnx
from export.options import Calibration, ExportOptions, Parity
from export.parity import compare_logits
from export.pipeline import export_model
from tests.conftest import sample_rows

# 256 rows: agreement on a model that changes per process (see below) must not hang on 2 rows
TEXTS = [r["text"] for r in sample_rows("validation", 256, seed=2)]
TRAIN_TEXTS = [r["text"] for r in sample_rows("train", 64, seed=2)]


@pytest.fixture(scope="module")
def exported(varied_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    options = ExportOptions(
        quantize=["dynamic", "static"],
        formats=["onnx", "ort"],
        ort_variant="static_int8",
        calibration=Calibration(rows=32),
        parity=Parity(rows=256, min_label_agreement=0.75),
    )
    return export_model(
        varied_model_dir, out, TEXTS, options, log=lambda _: None, calibration_texts=TRAIN_TEXTS
    )


def test_fp32_export_matches_pytorch(exported):
    import onnx

    model = onnx.load(str(exported.files["fp32"]))
    assert model.opset_import[0].version == OPSET
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in model.graph.input
    }
    assert dims["input_ids"] == ["batch_size", "sequence_length"]  # dynamic axes
    for name in ("fp32", "fp32_fused"):
        parity = exported.parity[name]
        assert (
            parity["max_abs_diff"] < 1e-4 and parity["label_agreement"] == 1.0 and parity["passed"]
        )


def test_fused_graph_has_transformer_fusions(exported):
    ops = exported.op_counts["fp32_fused"]
    assert ops.get("Attention", 0) == 2 and ops.get("SkipLayerNormalization", 0) >= 2


def test_ptq_models_run_integer_kernels(exported):
    dynamic = exported.op_counts["dynamic_int8"]
    assert dynamic.get("MatMulInteger", 0) + dynamic.get("DynamicQuantizeMatMul", 0) >= 12
    static = exported.op_counts["static_int8"]
    assert static.get("QuantizeLinear", 0) > 10 and static.get("DequantizeLinear", 0) > 10
    assert exported.sizes["dynamic_int8"] < exported.sizes["fp32"]
    reference = open_model(exported.files["fp32"]).logits(TEXTS)
    labels = reference.argmax(-1)
    assert 0.1 < labels.mean() < 0.9  # the labels vary: agreement is not trivially 1
    margin = float((reference[:, 1] - reference[:, 0]).std())
    # Dynamic INT8 on this model kept 92-98% of 64 rows' labels, mean |dlogit| 0.25-0.32 against
    # a 2.2-2.7 spread of margins (measured over eight vocabularies, before the tiny vocabulary
    # was fixed: the bounds hold for more than the one model the suite now builds). Static MinMax INT8 keeps only about 70% on random wide weights (less than always
    # answering the majority label would): it is checked for integer kernels above, its accuracy
    # on real models is in README's tables.
    parity = exported.parity["dynamic_int8"]
    assert parity["label_agreement"] >= 0.9, parity
    assert parity["mean_abs_diff"] < 0.25 * margin, (parity, margin)
    assert exported.parity["static_int8"]["rows"] == 256


def test_ort_file_loads_and_matches_its_onnx(exported):
    ort_file = exported.files["static_int8_ort"]
    assert (
        ort_file.suffix == ".ort"
        and ort_file.with_name("model_static_int8.required_operators.config").is_file()
    )
    a = open_model(ort_file).logits(TEXTS)
    b = open_model(exported.files["static_int8"]).logits(TEXTS)
    assert (a.argmax(-1) == b.argmax(-1)).all()
    assert np.abs(a - b).max() < 1e-4


def test_export_dir_loads_in_optimum_as_is(exported):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    model = ORTModelForSequenceClassification.from_pretrained(
        str(exported.out_dir), file_name="model.onnx"
    )
    tokenizer = AutoTokenizer.from_pretrained(str(exported.out_dir))
    logits = (
        model(**tokenizer(TEXTS[:4], padding=True, return_tensors="pt")).logits.detach().numpy()
    )
    from bench.runtime import open_model

    reference = open_model(exported.files["fp32"]).run(
        open_model(exported.files["fp32"]).encode(TEXTS[:4])
    )
    assert np.abs(logits - reference).max() < 1e-4


def test_parity_thresholds_fail_with_numbers():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    result = compare_logits(
        ref, ref + [[0.0, 2.0], [0.0, 0.0]], max_abs_diff=1e-4, min_label_agreement=0.99
    )
    assert not result.passed and result.max_abs_diff == 2.0 and result.label_agreement == 0.5


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_model_dir):
    with pytest.raises(ExportError, match="model directory not found"):
        export_onnx(tmp_path / "missing", tmp_path / "out")
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (encoder / "config.json").write_text(json.dumps(config))
    (encoder / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    with pytest.raises(
        ExportError, match=r"not a sequence or token classifier \(architectures: \['BertModel'\]\)"
    ):
        export_onnx(encoder, tmp_path / "out")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    from export.quantize import quantize_dynamic_int8

    with pytest.raises(ExportError, match="not a valid ONNX model"):
        quantize_dynamic_int8(corrupt, tmp_path / "q.onnx")
    from bench.errors import BenchError
    from bench.runtime import open_model

    (tmp_path / "tokenizer.json").write_bytes((tiny_model_dir / "tokenizer.json").read_bytes())
    for name in ("tokenizer_config.json", "config.json", "vocab.txt", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(BenchError, match="corrupt.onnx: cannot load"):
        open_model(corrupt)


def test_cli_export_writes_files_and_reports_sizes(tmp_path, tiny_model_dir, run_cli):
    code, out, err = run_cli(
        "export",
        tiny_model_dir,
        "--out",
        tmp_path / "x",
        "--quantize",
        "dynamic",
        "--parity-rows",
        "32",
        "--min-label-agreement",
        "0.5",
    )
    assert code == 0, err
    names = [line.split("\t")[0] for line in out.strip().splitlines()]
    assert names == ["fp32", "fp32_fused", "dynamic_int8"]
    code, _, err = run_cli("export", tmp_path / "nope", "--out", tmp_path / "y")
    assert code == 2 and err.count("\n") == 1 and "model directory not found" in err
    code, _, err = run_cli("export", tiny_model_dir, "--out", tmp_path / "z", "--quantize", "fp4")
    assert code == 2 and "quantize mode 'fp4'" in err


def test_int8_embedding_table_is_per_row_and_close_to_fp32(exported, tmp_path):
    import shutil

    import onnx
    from onnx import numpy_helper

    from bench.runtime import open_model
    from export.qdq import quantize_embedding_tables

    source = exported.files["fp32"]
    copy = tmp_path / "model.onnx"
    shutil.copy(source, copy)
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ):
        if (source.parent / name).exists():
            shutil.copy(source.parent / name, tmp_path / name)
    assert quantize_embedding_tables(copy, min_rows=10_000) == 0  # 600 rows: below the floor
    assert quantize_embedding_tables(copy, min_rows=500) == 1  # the word embedding only
    graph = onnx.load(str(copy)).graph
    tables = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(source)).graph.initializer}
    (name,) = [n for n in tables if n.endswith("_int8")]
    float_name = name[: -len("_int8")]
    assert tables[name].dtype == np.int8 and tables[name].shape == (600, 32)
    assert float_name not in tables and original[float_name].shape == (600, 32)
    rebuilt = tables[name] * tables[float_name + "_row_scale"]
    step = np.abs(original[float_name]).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(rebuilt - original[float_name]) <= step / 2 + 1e-7)  # half a step per row
    reference, quantized = open_model(source).logits(TEXTS), open_model(copy).logits(TEXTS)
    margin = float((reference[:, 1] - reference[:, 0]).std())  # how far apart the rows' logits are
    # Over eight vocabularies (before the tiny vocabulary was fixed) max |dlogit| ranged 0.19 to
    # 0.71, mean 0.043 to 0.048, against a 2.2-2.6 spread of margins: the mean is the stable
    # measure of the table's error.
    assert np.abs(reference - quantized).mean() < 0.05 * margin
    assert (reference.argmax(-1) == quantized.argmax(-1)).mean() >= 0.95
    assert copy.stat().st_size < source.stat().st_size - 600 * 32 * 2


def test_the_optimum_peer_is_optimums_avx512_vnni_dynamic_int8(tiny_model_dir, tmp_path):
    """Every "x peer" figure divides by this model: Optimum's dynamic INT8 (QOperator integer
    ops, per-tensor scales, uint8 activations, int8 weights), as an Optimum user makes it."""
    import collections

    import onnx
    from onnx import numpy_helper

    from export.quantize import optimum_dynamic_int8

    onnx_dir = export_onnx(tiny_model_dir, tmp_path / "onnx").parent
    peer = optimum_dynamic_int8(onnx_dir, onnx_dir)
    graph = onnx.load(str(peer)).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    assert ops["MatMulInteger"] >= 12 and ops["DynamicQuantizeLinear"] >= 1
    assert ops["QuantizeLinear"] == 0  # QOperator: no QDQ pairs around the matmuls
    producers = {out: node.op_type for node in graph.node for out in node.output}
    dequantized = [n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"]
    assert all(producers.get(name) == "Gather" for name in dequantized)  # int8 embedding rows
    initializers = {i.name: i for i in graph.initializer}
    weights = [
        initializers[node.input[1]]
        for node in graph.node
        if node.op_type == "MatMulInteger"
        if node.input[1] in initializers
    ]
    assert weights and all(w.data_type == onnx.TensorProto.INT8 for w in weights)  # s8 weights
    zero_points = [
        initializers[node.input[3]]
        for node in graph.node
        if node.op_type == "MatMulInteger"
        if len(node.input) > 3 and node.input[3] in initializers
    ]
    assert all(numpy_helper.to_array(z).size == 1 for z in zero_points)  # per-tensor
    activations = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert activations  # DynamicQuantizeLinear emits uint8: u8 activations x s8 weights
    runner = open_model(peer)
    texts = [r["text"] for r in sample_rows("validation", 64)]
    reference = open_model(tiny_model_dir).logits(texts)
    assert np.abs(runner.logits(texts) - reference).max() < 0.1


def test_openvino_ir_is_exported_checked_and_served_like_any_model_file(
    varied_model_dir, tmp_path, run_cli
):
    """`--openvino` writes the IR of the shipped variant (.xml + .bin), checks its parity like
    the ONNX files, and predict opens the .xml."""
    import json

    from tests.conftest import sample_rows

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(r["text"] for r in sample_rows("validation", 64)) + "\n")
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "export", varied_model_dir, "--out", out, "--openvino", "--texts", texts,
        "--min-label-agreement", "0",
    )  # fmt: skip
    assert code == 0, err
    xml = out / "model_fused.xml"
    assert "fp32_fused_openvino\t" in stdout and xml.is_file() and xml.with_suffix(".bin").is_file()
    assert "parity fp32_fused_openvino: 64 rows: max |dlogit|" in err
    size = float(stdout.split("fp32_fused_openvino\t")[1].split(" MB")[0])
    assert size == round((xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6, 1)
    code, stdout, err = run_cli("predict", xml, "--file", texts)
    assert code == 0, err
    _, onnx_out, _ = run_cli("predict", out / "model.onnx", "--file", texts)
    ir_labels = [json.loads(line)["label"] for line in stdout.splitlines()]
    assert ir_labels == [json.loads(line)["label"] for line in onnx_out.splitlines()]
    assert len(set(ir_labels)) == 2

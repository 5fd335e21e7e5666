"""The static-embedding student (`type: static`), its export, and the static peer rows.

A tiny BERT's encoder is distilled into a table by model2vec, trained with the teacher's soft
labels, exported (fp32 and the fp16 table), opened by every runtime path and benchmarked beside
TF-IDF, model2vec and fastText on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoTokenizer

from bench.classic import fit_classic
from bench.errors import BenchError
from bench.runtime import open_model
from bench.static_model import StaticEmbeddingConfig, StaticEmbeddingForSequenceClassification
from compress.data.vocab import prune_embeddings
from compress.errors import EdgebertError
from export.onnx_export import export_onnx
from export.table_fp16 import fp16_tables
from tests.conftest import run_ok, sample_rows
from tests.test_web import needs_browser, needs_runtime

pytest.importorskip("model2vec.distill")
pytest.importorskip("fasttext")


def static_recipe(model_dir: Path, data: Path, extra_with: str = "", bench: bool = True) -> str:
    bench_stage = """
  - type: bench
    classic: [tfidf_lr, model2vec, fasttext]
    baseline: "classic:model2vec"
    batch_sizes: [1, 8]
    seq_lengths: [32]
    min_seconds: 0.05
    traffic_batch_size: null
"""
    return f"""
name: tiny-static
seed: 3
data:
  train: {data / "train.jsonl"}
  validation: {data / "validation.jsonl"}
  clean: [nfkc, collapse_whitespace]
  max_length: 32
stages:
  - type: finetune
    name: teacher
    model: {model_dir}
    training: {{lr: 5.0e-4, batch_size: 16, epochs: 1, seed: 1}}
  - type: static
    name: static
    model: "@teacher"
    table: {{dims: 16}}
    head: {{hidden: 32}}
    max_length: 64
    vocab: {{min_count: 1}}
    training: {{lr: 3.0e-3, batch_size: 16, epochs: 3, seed: 1, tune_thresholds: true}}
    select_best: macro_f1
    with:
      - distill: {{teacher: "@teacher", temperature: 2.0, alpha: 0.5, retokenize: true}}{extra_with}
  - type: export
    model: "@static"
    quantize: [fp16_table, dynamic]
    parity: {{rows: 100, min_label_agreement: 0.9, enforce: [fp32, fp16_table]}}
""" + (bench_stage if bench else "")


@pytest.fixture(scope="module")
def static_run(tiny_model_dir, tmp_path_factory):
    """One whole static run (teacher, static student, export, bench), shared by the tests."""
    from tests.conftest import write_jsonl

    root = tmp_path_factory.mktemp("static")
    data = root / "data"
    write_jsonl(data / "train.jsonl", sample_rows("train", 400))
    write_jsonl(data / "validation.jsonl", sample_rows("validation", 100))
    (data / "labels.json").write_text('["negative", "positive"]')
    recipe = root / "static.yaml"
    recipe.write_text(static_recipe(tiny_model_dir, data))
    return recipe, data, root


def test_static_run_trains_exports_and_benches_beside_the_peers(static_run, run_cli):
    recipe, _, root = static_run
    run_dir, metrics, err = run_ok(run_cli, recipe, root / "runs")
    student = metrics["static"]
    assert student["vocab"]["vocab_after"] < student["vocab"]["vocab_before"]
    # table (kept tokens x 16) + head (16x32 + 32 + 32x2 + 2): no encoder layer anywhere
    assert student["parameters"] == student["vocab"]["vocab_after"] * 16 + 16 * 32 + 32 + 32 * 2 + 2
    parity = metrics["export"]["parity"]
    assert parity["fp32"]["max_abs_diff"] < 1e-4 and parity["fp32"]["label_agreement"] == 1.0
    assert parity["fp16_table"]["label_agreement"] >= 0.98
    sizes = metrics["export"]["sizes_bytes"]
    assert sizes["fp16_table"] < 0.75 * sizes["fp32"]
    assert "fp32_fused" not in metrics["export"]["files"]  # nothing to fuse without attention
    # the static stage reads 64 tokens per text where the teacher reads data.max_length (32),
    # and its files say so to every runtime that opens them
    stages = run_dir / "stages"
    assert (
        json.loads((stages / "00-teacher" / "model" / "edgebert.json").read_text())["max_length"]
        == 32
    )
    assert open_model(stages / "02-export" / "onnx").max_length == 64
    report = json.loads((run_dir / "stages" / "03-bench" / "report.json").read_text())
    rows = {m["name"]: m for m in report["models"]}
    assert {"classic:tfidf_lr", "classic:model2vec", "classic:fasttext"} <= set(rows)
    assert (
        rows["classic:fasttext"]["kind"] == "peer" and rows["classic:model2vec"]["kind"] == "peer"
    )
    paired = rows["export:fp16_table"]["accuracy"]["vs_baseline"]  # against model2vec's row
    assert paired["accuracy_ci"][0] <= paired["accuracy_diff"] <= paired["accuracy_ci"][1]
    assert rows["classic:fasttext"]["latency"][0]["ratio_to_baseline_p50"] > 0
    for name in ("export:fp32", "export:fp16_table", "classic:model2vec", "classic:fasttext"):
        assert 0.3 < rows[name]["accuracy"]["accuracy"] <= 1.0, name
    assert "Encoding tokens" not in err  # model2vec's progress bars stay out of the log


def test_static_onnx_graph_is_a_lookup_a_mean_and_a_head(static_run, run_cli):
    recipe, _, root = static_run
    onnx_dir = next((root / "runs").glob("tiny-static-*/stages/02-export/onnx"))
    ops = [n.op_type for n in onnx.load(str(onnx_dir / "model.onnx")).graph.node]
    assert ops.count("Gather") == 1 and ops.count("Gemm") + ops.count("MatMul") == 2
    assert not {"Softmax", "Attention", "LayerNormalization"} & set(ops)
    half = onnx.load(str(onnx_dir / "model_fp16_table.onnx"))
    table = next(i for i in half.graph.initializer if len(i.dims) == 2 and i.dims[1] == 16)
    assert table.data_type == onnx.TensorProto.FLOAT16
    texts = ["a gripping, funny film", "", "dull " * 100, "caf\u00e9 \U0001f600"]
    fp32 = open_model(onnx_dir / "model.onnx").logits(texts)
    torch_dir = next((root / "runs").glob("tiny-static-*/stages/01-static/model"))
    np.testing.assert_allclose(open_model(torch_dir).logits(texts), fp32, atol=1e-5)
    code, out, err = run_cli("predict", onnx_dir / "model_fp16_table.onnx", "a gripping film")
    assert code == 0, err
    answer = json.loads(out.splitlines()[0])
    assert answer["label"] in ("negative", "positive") and 0.5 <= answer["score"] <= 1.0


def test_static_stage_refuses_what_needs_transformer_layers(
    tiny_model_dir, tiny_data, tmp_path, run_cli
):
    for extra, expected in [
        (
            "\n      - prune_structured: {heads: 0.5}",
            "with[1]: a static student takes only 'distill'",
        ),
        ("\n      - qat: {start_epoch: 3}", "'qat' acts on transformer layers"),
    ]:
        recipe = tmp_path / "bad.yaml"
        recipe.write_text(static_recipe(tiny_model_dir, tiny_data, extra, bench=False))
        code, _, err = run_cli("run", recipe, "--dry-run")
        assert code == 2 and expected in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    recipe.write_text(
        static_recipe(tiny_model_dir, tiny_data, bench=False).replace(
            "retokenize: true}", "retokenize: true, relations: {weight: 1.0}}"
        )
    )
    code, _, err = run_cli("run", recipe, "--dry-run")
    assert code == 2 and "with[0].distill.relations: a static student has no layers" in err


def test_static_stage_refuses_token_classification(tiny_model_dir, tiny_data, tmp_path, run_cli):
    recipe = tmp_path / "ner.yaml"
    text = static_recipe(tiny_model_dir, tiny_data, bench=False)
    recipe.write_text(
        text.replace("name: tiny-static\n", "name: tiny-static\ntask: token-classification\n")
    )
    code, _, err = run_cli("run", recipe, "--dry-run")
    assert code == 2 and "stages[1]: a static stage cannot do token-classification" in err, err


def test_static_table_from_a_static_model_is_one_line(static_run, tiny_data, tmp_path, run_cli):
    _, _, root = static_run
    static_dir = next((root / "runs").glob("tiny-static-*/stages/01-static/model"))
    recipe = tmp_path / "again.yaml"
    recipe.write_text(
        f"""
name: again
data:
  train: {tiny_data / "train.jsonl"}
  validation: {tiny_data / "validation.jsonl"}
stages:
  - type: static
    model: {static_dir}
"""
    )
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 2 and "a static model has no encoder to distil a table from" in err, err
    assert err.strip().splitlines()[-1].startswith("edgebert: error: ") and "Traceback" not in err


def test_peer_rows_answer_in_the_runs_label_order(tiny_model_dir):
    rows = sample_rows("train", 300)
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    names = ["negative", "positive"]
    for kind in ("fasttext", "model2vec"):
        runner = fit_classic(kind, texts, labels, names, base_model=tiny_model_dir)
        logits = runner.logits(texts[:50], batch_size=16)
        assert logits.shape == (50, 2)
        np.testing.assert_allclose(np.exp(logits).sum(1), 1.0, atol=1e-3)
        agree = (logits.argmax(1) == np.array(labels[:50])).mean()
        assert agree > 0.6, (kind, agree)  # rows it trained on
        assert runner.size_bytes > 0 and runner.token_lengths(["a b c"])[0] >= 3


def test_missing_peer_extra_is_one_line_naming_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fasttext" else real(name, *a)
    )
    with pytest.raises(
        BenchError, match=r"fasttext is not installed: pip install 'edgebert\[peers\]'"
    ):
        fit_classic("fasttext", ["good", "bad"], [1, 0], ["negative", "positive"])
    with pytest.raises(BenchError, match="name the encoder it distils from"):
        fit_classic("model2vec", ["good", "bad"], [1, 0], ["negative", "positive"])


@needs_browser
@needs_runtime
def test_the_web_page_runs_a_static_student_like_python(static_run, run_cli, tmp_path):
    from tests.browser import classify_in_page, open_page, serve_folder

    _, _, root = static_run
    shipped = next(
        (root / "runs").glob("tiny-static-*/stages/02-export/onnx/model_fp16_table.onnx")
    )
    code, _, err = run_cli("export", shipped, "--web", tmp_path / "page")
    assert code == 0, err
    texts = [r["text"] for r in sample_rows("validation", 40, seed=2)]
    python = open_model(shipped).logits(texts, batch_size=1)
    with serve_folder(tmp_path / "page") as url, open_page(url) as browser:
        _, results = classify_in_page(browser, texts)
    page = np.array([r["logits"] for r in results])
    assert np.abs(page - python).max() < 1e-4  # a float graph: no INT8 kernel differences
    assert [r["index"] for r in results] == python.argmax(-1).tolist()


def test_mean_max_pooling_ignores_padding_and_exports_with_the_same_logits(
    tiny_model_dir, tmp_path
):
    torch.manual_seed(0)
    config = StaticEmbeddingConfig(
        vocab_size=600,
        embedding_dim=8,
        head_hidden=0,
        pooling="mean_max",
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model = StaticEmbeddingForSequenceClassification(config).eval()
    assert model.classifier[0].in_features == 16  # the mean and the maximum side by side
    with torch.no_grad():
        model.embeddings.weight[0] = 100.0  # a padding row that would win every maximum
    ids = torch.tensor([[5, 7, 9, 0, 0], [5, 7, 9, 11, 13]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = model.pooled(ids, mask)
    alone = model.pooled(ids[:1, :3], mask[:1, :3])
    torch.testing.assert_close(pooled[:1], alone)
    vectors = model.embeddings.weight[[5, 7, 9]]
    peak = vectors.amax(0)
    torch.testing.assert_close(pooled[0, 8:], peak / peak.norm())
    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(tmp_path / "model"))
    export_onnx(tmp_path / "model", tmp_path / "onnx")
    texts = ["a gripping, funny film", "", "dull " * 60]
    np.testing.assert_allclose(
        open_model(tmp_path / "onnx" / "model.onnx").logits(texts),
        open_model(tmp_path / "model").logits(texts),
        atol=1e-5,
    )


def test_pair_vectors_see_word_order_ignore_padding_and_start_at_zero(tiny_model_dir, tmp_path):
    def model(pair_buckets: int) -> StaticEmbeddingForSequenceClassification:
        torch.manual_seed(0)
        config = StaticEmbeddingConfig(
            vocab_size=600,
            embedding_dim=8,
            head_hidden=0,
            pair_buckets=pair_buckets,
            id2label={0: "negative", 1: "positive"},
            label2id={"negative": 0, "positive": 1},
        )
        return StaticEmbeddingForSequenceClassification(config).eval()

    tokens_only, with_pairs = model(0), model(97)
    assert with_pairs.pairs.weight.abs().sum() == 0  # a new student answers as tokens alone
    with_pairs.load_state_dict(tokens_only.state_dict(), strict=False)  # the same token table
    ids = torch.tensor([[5, 7, 9, 0, 0], [9, 7, 5, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        alike = tokens_only.pooled(ids, mask)
        torch.testing.assert_close(alike[0], alike[1])  # a mean of tokens has no word order
        # 3 tokens and 2 zero pairs share the mean: the same direction, once unit length
        torch.testing.assert_close(with_pairs.pooled(ids, mask), alike)
        with_pairs.pairs.weight.normal_()
        pooled = with_pairs.pooled(ids, mask)
        assert (pooled[0] - pooled[1]).abs().max() > 0.1  # "5 7 9" and "9 7 5" now differ
        torch.testing.assert_close(pooled[:1], with_pairs.pooled(ids[:1, :3], mask[:1, :3]))
    with pytest.raises(EdgebertError, match="pair table is keyed by the current token ids"):
        prune_embeddings(with_pairs, list(range(300)))  # trained pairs: ids must not move
    prune_embeddings(model(97), list(range(300)))  # zero pairs (a new student): free to cut
    with_pairs.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(tmp_path / "model"))
    export_onnx(tmp_path / "model", tmp_path / "onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.node]
    assert ops.count("Gather") == 2 and ops.count("Mod") == 1  # tokens, then hashed pairs
    half = fp16_tables(tmp_path / "onnx" / "model.onnx", tmp_path / "onnx" / "half.onnx")
    graph = onnx.load(str(half)).graph
    looked_up = {n.input[0] for n in graph.node if n.op_type == "Gather"}
    tables = {i.dims[0]: i.data_type for i in graph.initializer if i.name in looked_up}
    assert tables == {600: onnx.TensorProto.FLOAT16, 97: onnx.TensorProto.FLOAT16}
    texts = ["not good at all", "", "good " * 60, "a"]
    python = open_model(tmp_path / "model").logits(texts)
    np.testing.assert_allclose(
        open_model(tmp_path / "onnx" / "model.onnx").logits(texts), python, atol=1e-5
    )
    np.testing.assert_allclose(open_model(half).logits(texts), python, atol=1e-2)

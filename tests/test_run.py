"""End-to-end runs of a tiny recipe through the engine and the CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST_BENCH, run_ok, tiny_recipe


def test_run_writes_a_complete_run_directory(tmp_path, tiny_model_dir, tiny_data, run_cli):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data))
    run_dir, _, _ = run_ok(run_cli, recipe, tmp_path / "runs")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".edgebert.lock",  # one writer at a time (flock; empty of meaning once the run ends)
        "manifest.json",
        "metrics.json",
        "recipe.resolved.yaml",
        "run.log",
        "stages",
        "state.json",
    ]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["seed"] == 7
    assert set(manifest["data_sha256"]) == {"train.jsonl", "validation.jsonl"}  # portable
    assert manifest["packages"]["torch"].startswith("2.13.0")
    resolved = yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text())
    assert resolved["stages"][0]["training"]["warmup_ratio"] == 0.1  # defaults filled in
    stage = run_dir / "stages" / "00-finetune"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["validation"]["n"] == 100 and 0.0 <= metrics["validation"]["accuracy"] <= 1.0
    assert metrics["epochs_run"] == 2 and metrics["train_rows"] == 400
    model_files = {p.name for p in (stage / "model").iterdir()}
    assert {"model.safetensors", "config.json", "edgebert.json", "tokenizer.json"} <= model_files
    assert not any(name.endswith((".bin", ".pt", ".tmp")) for name in model_files)
    meta = json.loads((stage / "model" / "edgebert.json").read_text())
    assert (
        meta["clean"] == ["strip_html", "nfkc", "collapse_whitespace"] and meta["max_length"] == 32
    )

    code, out, err = run_cli("predict", stage / "model", "<b>a  wonderful, moving film</b>")
    assert code == 0, err
    result = json.loads(out)
    assert result["label"] in ("negative", "positive")
    assert sum(result["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_two_runs_with_the_same_seed_give_the_same_metrics(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1))
    outputs = []
    for _ in range(2):
        outputs.append(run_ok(run_cli, recipe, tmp_path / "runs")[1])
    for metrics in outputs:
        metrics["finetune"].pop("train_seconds"), metrics["finetune"].pop("wall_seconds")
    assert outputs[0] == outputs[1]


def test_bad_data_fails_before_a_run_directory_exists(tmp_path, tiny_model_dir, tiny_data, run_cli):
    (tiny_data / "train.jsonl").write_text(
        '{"text": "ok", "label": 1}\n{"text": "x", "label": 9}\n'
    )
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data))
    code, out, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 2
    assert err.strip().endswith("train.jsonl:2: label 9 out of range 0..1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.yaml"], "recipe not found: missing.yaml"),
        (["run", "no-such-recipe"], "recipe not found: no-such-recipe"),
        (["predict", "/nonexistent", "hi"], "model directory not found: /nonexistent"),
        (["predict", "/tmp"], "give either a text or --file"),
    ],
)
def test_cli_errors_are_one_line_with_non_zero_exit(run_cli, args, message):
    code, out, err = run_cli(*args)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_unknown_model_and_model_without_weights(tmp_path, tiny_data, run_cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        tiny_recipe(tmp_path / "nothing-here", tiny_data).replace(
            str(tmp_path / "nothing-here"), "bert-huge"
        )
    )
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 2 and "unknown model 'bert-huge'" in err
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    recipe.write_text(tiny_recipe(empty, tiny_data))
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 2 and "no .safetensors weights" in err


def test_corrupt_safetensors_is_a_one_line_error(tmp_path, tiny_model_dir, run_cli):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_model_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, err = run_cli("predict", broken, "hello")
    assert code == 2 and "cannot load model" in err and err.count("\n") == 1


def test_version_and_schema(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == "edgebert 0.1.0"
    code, out, _ = run_cli("schema")
    assert code == 0 and json.loads(out)["title"] == "Recipe"


def test_installed_console_script_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ndata: {dataset: sst2-sample}\nstages:\n  - {type: finetune, model: m, training: {lr: zero}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "compress.cli", "run", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert (
        proc.stderr
        == f"edgebert: error: {bad}:4: stages[0].training.lr: Input should be a valid number, unable to parse string as a number, got 'zero'\n"
    )


def test_finetune_export_bench_compose_in_one_recipe(
    tmp_path, tiny_model_dir, tiny_data, run_cli, monkeypatch
):
    recipe = tmp_path / "full.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1)
        + """  - type: export
    quantize: [dynamic]
    formats: [onnx, ort]
    parity: {rows: 64, min_label_agreement: 0.5}
  - type: bench
    torch_fp32: ["@finetune"]
    ort_fp32: ["@finetune"]
    baseline: "finetune:torch_fp32"
    batch_sizes: [1]
    seq_lengths: [16]
    threads: 1
    min_seconds: 0.02
    runtime_variants: {"int8-spin": "export:dynamic_int8:spinning=on,io_binding=on"}
"""
    )
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    assert list(metrics) == ["finetune", "export", "bench"]
    assert set(metrics["export"]["files"]) == {
        "fp32",
        "fp32_fused",
        "dynamic_int8",
        "dynamic_int8_ort",
    }
    assert metrics["export"]["parity"]["fp32"]["passed"]
    assert metrics["bench"]["models"] == [
        "finetune:torch_fp32",
        "finetune:ort_fp32",
        "export:fp32",
        "export:fp32_fused",
        "export:dynamic_int8",
        "export:dynamic_int8_ort",
        "int8-spin",
    ]
    report = json.loads((run_dir / "stages" / "02-bench" / "report.json").read_text())
    variant = report["models"][-1]
    assert variant["path"] == report["models"][4]["path"] and variant["settings"]["io_binding"]
    assert not report["models"][4]["settings"]["spinning"] and variant["settings"]["spinning"]
    ort_fp32 = report["models"][1]
    assert ort_fp32["accuracy"]["accuracy"] == report["models"][0]["accuracy"]["accuracy"]
    stage = report["stages"][0]
    # The ledger: the two stages, then every benchmarked file against the teacher's own rows.
    assert stage["stage"] == "finetune" and len(report["stages"]) == 2 + 7
    files = {row["stage"]: row for row in report["stages"] if row["step"] == "file"}
    assert list(files) == metrics["bench"]["models"]
    same_model = files["finetune:torch_fp32"]["vs_teacher"]  # the teacher, scored by bench
    assert abs(same_model["accuracy_diff"]) <= 0.02 and same_model["accuracy_ci"][0] <= 0
    assert stage["accuracy"] == metrics["finetune"]["validation"]["accuracy"]
    weights = (run_dir / "stages" / "00-finetune" / "model" / "model.safetensors").stat().st_size
    assert stage["size_bytes"] == weights and stage["parameters"] > 0
    page = (run_dir / "stages" / "02-bench" / "report.html").read_text()
    assert '<p id="headline"><b>Pareto front (batch-1 latency vs macro-F1):' in page
    # The closing summary: every shipped file against the peer and the teacher, what to ship.
    summary = (run_dir / "summary.txt").read_text()
    assert summary.strip() in err and summary == metrics["bench"]["summary"] + "\n"
    rows = {line.split()[0]: line for line in summary.splitlines() if line.strip()}
    peer_b1 = report["models"][0]["latency"][0]["p50_ms"]
    int8 = report["models"][4]
    assert (
        f"{int8['latency'][0]['p50_ms']:.2f} ({peer_b1 / int8['latency'][0]['p50_ms']:.1f}x)"
        in rows["export:dynamic_int8"]
    )
    delta = 100 * (int8["accuracy"]["accuracy"] - metrics["finetune"]["validation"]["accuracy"])
    assert f"{int8['accuracy']['accuracy']:.4f} ({delta:+.1f})" in rows["export:dynamic_int8"]
    assert "finetune:ort_fp32" not in rows  # baselines are not shipped files
    shipped = rows["ship:"].split()[1]
    assert shipped in {m["path"] for m in report["models"][2:]}
    assert f"edgebert predict {shipped}" in summary and f"edgebert serve {shipped}" in summary
    assert "vs the peer on the same rows: accuracy +0.0 points (95% CI +0.0 to +0.0)" in summary
    # Progress for logs (stderr is not a terminal here): train and evaluation lines.
    log = (run_dir / "run.log").read_text()
    steps = metrics["finetune"]["steps"]
    assert re.search(
        rf"\[finetune\] train {steps}/{steps} steps  epoch 1/1  loss [0-9.]+  "
        r"rate [0-9.]+ rows/s  elapsed 0:00:\d\d ETA 0:00:00",
        log,
    )
    assert "[finetune] evaluate 100/100 rows" in log and "[bench] timed 1/1 shapes" in log
    assert f"[finetune] train {steps}/{steps} steps" in err
    # `edgebert bench` on a file from this run fills the Stages table from the run directory
    monkeypatch.setenv("EDGEBERT_DATASETS", str(tiny_data.parent))
    int8_file = run_dir / "stages" / "01-export" / "onnx" / "model_dynamic_int8.onnx"
    code, _, err = run_cli(
        "bench",
        int8_file,
        "--dataset",
        tiny_data.name,
        *FAST_BENCH,
        "--traffic-batch",
        "0",
        "--out",
        tmp_path / "cli-bench",
    )
    assert code == 0, err
    cli_report = json.loads((tmp_path / "cli-bench" / "report.json").read_text())
    assert [row["stage"] for row in cli_report["stages"]] == [
        "finetune",
        "export",
        "bench",
        "model_dynamic_int8",  # the file itself closes the ledger, against the run's teacher
    ]
    assert cli_report["stages"][-1]["vs_teacher"]["resamples"] == 2000
    assert cli_report["stages"][0] == report["stages"][0]


def test_parity_failure_fails_the_export_stage_with_numbers(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = tmp_path / "strict.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1)
        + "  - type: export\n    optimize: false\n    parity: {rows: 16, max_abs_diff: 1.0e-12}\n"
    )
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("edgebert: error: [export] fp32 parity failed")
    assert "[export] fp32 parity failed: max |dlogit|" in err and "(limit 1e-12)" in err
    manifest = json.loads(next((tmp_path / "runs").glob("*/manifest.json")).read_text())
    assert manifest["status"].startswith("failed: EdgebertError")
    # the finished training stage is kept
    assert next((tmp_path / "runs").glob("*/stages/00-finetune/model/model.safetensors")).is_file()


def test_export_before_training_is_refused(tmp_path, tiny_data):
    from compress.engine.recipe import parse_recipe
    from compress.errors import EdgebertError

    text = f"name: x\ndata: {{train: {tiny_data / 'train.jsonl'}}}\nstages:\n  - type: export\n"
    with pytest.raises(EdgebertError, match="no training stage comes before export"):
        parse_recipe(text, "r.yaml")


def test_parity_enforce_limits_which_variants_fail_the_stage(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    recipe = tmp_path / "enforce.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1)
        + "  - type: export\n    optimize: false\n    quantize: [dynamic]\n"
        + "    parity: {rows: 32, min_label_agreement: 0.0, max_abs_diff: 1.0e-12, enforce: [dynamic_int8]}\n"
    )
    run_dir, metrics, _ = run_ok(run_cli, recipe, tmp_path / "runs")
    parity = metrics["export"]["parity"]
    assert not parity["fp32"]["passed"]  # failed, reported, but not enforced
    assert parity["dynamic_int8"]["passed"]


def test_cli_bench_and_export_clean_texts_as_the_model_was_trained(tmp_path):
    from compress.cli import _clean_steps_of

    (tmp_path / "edgebert.json").write_text('{"clean": ["strip_html", "lower"], "max_length": 32}')
    (tmp_path / "model.onnx").write_bytes(b"")
    assert _clean_steps_of(tmp_path) == ["strip_html", "lower"]
    assert _clean_steps_of(tmp_path / "model.onnx") == ["strip_html", "lower"]
    assert _clean_steps_of(tmp_path / "elsewhere" / "m.onnx") == []


def test_a_model_without_edgebert_json_is_cleaned_the_same_everywhere(tiny_model_dir, tmp_path):
    """predict/serve, the CLI's bench and export texts, and the model-file readers agree on
    the cleaning of a model edgebert did not train (the one default, in bench.model_file)."""
    import shutil

    from bench.model_file import ModelFile, read_classifier_meta
    from compress.cli import _clean_steps_of
    from compress.serving.predict import Predictor

    model = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, model)
    (model / "edgebert.json").unlink(missing_ok=True)
    text = "  <b>Loud</b>\u200b  TEXT\t"
    assert _clean_steps_of(model) == read_classifier_meta(model)["clean"] == ModelFile().clean
    assert Predictor(model).clean(text) == text  # read as given, in every reader
    assert read_classifier_meta(model)["max_length"] == 128


def test_class_weights_and_tuned_thresholds_in_a_run(tmp_path, tiny_model_dir, tiny_data, run_cli):
    """The offsets are added to the classifier bias: the saved model (and every file exported
    from it) decides with the tuned thresholds, no post-processing."""
    recipe = tmp_path / "imbalanced.yaml"
    recipe.write_text(
        tiny_recipe(
            tiny_model_dir, tiny_data, epochs=1, class_weights="balanced", tune_thresholds=True
        )
    )
    _, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    tuned = metrics["finetune"]["thresholds"]
    assert tuned["offsets"][0] == 0.0 and len(tuned["offsets"]) == 2
    assert tuned["validation_macro_f1_after"] >= tuned["validation_macro_f1_before"]
    assert metrics["finetune"]["validation"]["macro_f1"] == pytest.approx(
        tuned["validation_macro_f1_after"], abs=1e-9
    )
    assert "thresholds: offsets [0.0, " in err


def test_bench_stage_builds_the_openvino_peer_and_times_files_under_openvino(
    tmp_path, tiny_model_dir, tiny_data, run_cli
):
    """`openvino_int8`: NNCF post-training INT8 of the teacher, run by OpenVINO (the peer an
    OpenVINO user would ship); a variant times the exported fp32 file under OpenVINO too."""
    recipe = tmp_path / "ov.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, tiny_data, epochs=1)
        + """  - type: export
    quantize: []
    optimize: false
  - type: bench
    openvino_int8: ["@finetune"]
    batch_sizes: [1]
    seq_lengths: [16]
    threads: 1
    min_seconds: 0.02
    runtime_variants: {"fp32-openvino": "export:fp32:engine=openvino"}
"""
    )
    run_dir, metrics, err = run_ok(run_cli, recipe, tmp_path / "runs")
    assert metrics["bench"]["models"] == ["finetune:openvino_int8", "export:fp32", "fp32-openvino"]
    report = json.loads((run_dir / "stages" / "02-bench" / "report.json").read_text())
    peer, fp32, fp32_ov = report["models"]
    assert peer["kind"] == "openvino" and peer["path"].endswith("model_nncf_int8.xml")
    xml = Path(peer["path"])
    assert peer["size_bytes"] == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    assert (
        fp32_ov["settings"]["engine"] == "openvino" and fp32["settings"]["engine"] == "onnxruntime"
    )
    assert fp32_ov["accuracy"]["accuracy"] == fp32["accuracy"]["accuracy"]
    assert abs(peer["accuracy"]["accuracy"] - fp32["accuracy"]["accuracy"]) <= 0.1

"""Latency statistics, the interleaved runner and the three report formats."""

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from bench.errors import BenchError
from bench.latency import interleaved_timings, latency_stats
from bench.options import BenchOptions
from bench.report import SCHEMA_FILE, headline, pareto_front, report_json_schema, write_reports
from bench.runner import run_benchmark
from bench.runtime import RuntimeSettings, open_model
from bench.schema import BenchReport
from tests.conftest import FAST_BENCH, sample_rows

ROWS = sample_rows("validation", 48, seed=3)


def test_latency_stats_on_known_samples():
    s = latency_stats([float(v) for v in range(1, 101)])  # 1..100 ms
    assert s["n"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["stdev_ms"] == pytest.approx(29.0115, abs=1e-4)
    # 95% t-interval: 50.5 -+ 1.9842 * 29.0115 / 10
    assert s["ci95_low_ms"] == pytest.approx(50.5 - 5.7565, abs=1e-3)
    assert s["ci95_high_ms"] == pytest.approx(50.5 + 5.7565, abs=1e-3)
    single = latency_stats([4.0])
    assert single["ci95_low_ms"] == single["ci95_high_ms"] == 4.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_interleaved_timings_alternate_models():
    order = []
    samples = interleaved_timings(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")},
        warmup=1,
        min_runs=3,
        min_seconds=0.0,
    )
    assert order == ["a", "b"] * 4  # one warm-up each, then a, b, a, b, a, b
    assert [len(v) for v in samples.values()] == [3, 3]


def test_pareto_front():
    points = {"big": (100.0, 0.90), "small": (10.0, 0.85), "bad": (50.0, 0.80), "tiny": (5.0, 0.70)}
    assert pareto_front(points) == ["tiny", "small", "big"]


@pytest.fixture(scope="module")
def report(varied_model_dir, tmp_path_factory):
    from export.onnx_export import export_onnx

    onnx_path = export_onnx(varied_model_dir, tmp_path_factory.mktemp("onnx"))
    return run_benchmark(
        {"torch": varied_model_dir, "onnx": onnx_path},
        [r["text"] for r in ROWS],
        [r["label"] for r in ROWS],
        dataset="sample",
        options=BenchOptions(
            batch_sizes=[1, 4],
            seq_lengths=[16, 32],
            threads=1,
            baseline="torch",
            min_seconds=0.05,
            traffic_batch_size=4,
        ),
        min_runs=5,
        stages=[
            {"stage": "finetune", "accuracy": 0.5, "macro_f1": 0.4, "parameters": 123},
            {
                "stage": "student",
                "step": "epoch 1: fp32, pruned (just pruned)",
                "accuracy": 0.45,
                "macro_f1": 0.35,
                "parameters": 99,
                "vs_teacher": {
                    "resamples": 2000,
                    "accuracy_diff": -0.05,
                    "accuracy_ci": [-0.08, -0.021],
                    "macro_f1_diff": -0.05,
                    "macro_f1_ci": [-0.09, -0.01],
                    "mcnemar_p": 0.01,
                    "only_reference_right": 9,
                    "only_model_right": 4,
                },
            },
        ],
        settings={"onnx": RuntimeSettings(io_binding=True, spinning=False)},
    )


def tiny_bert_macs(batch: int, seq: int) -> int:
    """2 layers x (4 projections 32x32 + FFN 32x64x2 per token + scores/context 2 x seq x 32),
    plus pooler 32x32 and classifier 32x2 per sequence."""
    per_token = 4 * 32 * 32 + 2 * 32 * 64 + 2 * seq * 32
    return batch * (2 * seq * per_token + 32 * 32 + 32 * 2)


def test_benchmark_fills_every_field(report):
    assert [m.name for m in report.models] == ["torch", "onnx"]
    for model in report.models:
        assert [(l.batch_size, l.seq_length) for l in model.latency] == [
            (1, 16),
            (4, 16),
            (1, 32),
            (4, 32),
        ]
        for lat in model.latency:
            assert lat.n >= 5 and 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms
            assert lat.throughput_seq_per_s == pytest.approx(lat.batch_size * 1000 / lat.mean_ms)
            assert lat.tokenize_p50_ms > 0 and lat.ratio_to_baseline_p50 > 0
        assert model.size_bytes > 0 and 0 < model.zipped_bytes < model.size_bytes * 1.01
        assert model.accuracy.n == 48 and sum(map(sum, model.accuracy.confusion_matrix)) == 48
    torch_model, onnx_model = report.models
    assert all(l.ratio_to_baseline_p50 == 1.0 for l in torch_model.latency)
    assert onnx_model.accuracy.label_agreement_with_baseline == 1.0  # fp32 export: same labels
    paired = onnx_model.accuracy.vs_baseline  # same labels: no difference, McNemar p = 1
    assert paired.accuracy_diff == 0 and paired.accuracy_ci == [0, 0] and paired.mcnemar_p == 1
    assert torch_model.accuracy.vs_baseline is None  # the baseline itself
    from bench.metrics import expected_calibration_error

    texts, labels = [r["text"] for r in ROWS], [r["label"] for r in ROWS]
    logits = open_model(onnx_model.path).logits(texts)
    assert onnx_model.accuracy.ece == pytest.approx(expected_calibration_error(logits, labels))
    assert 0 < onnx_model.accuracy.ece < 1
    predicted = [sum(column) for column in zip(*onnx_model.accuracy.confusion_matrix)]
    assert min(predicted) >= 5, predicted  # ... and the labels vary, so agreeing means something
    assert report.machine.threads == 1 and report.machine.onnxruntime
    assert all(l.macs is None for l in torch_model.latency)  # PyTorch: no graph to count
    for lat in onnx_model.latency:
        assert lat.macs == tiny_bert_macs(lat.batch_size, lat.seq_length)
        assert lat.gmacs_per_s == pytest.approx(lat.macs / lat.p50_ms / 1e6)
    assert onnx_model.settings["io_binding"] and not onnx_model.settings["spinning"]
    assert torch_model.settings == {"threads": 1}
    for model in report.models:
        traffic = model.traffic
        assert traffic.texts == 48 and traffic.batch_size == 4 and traffic.seconds > 0
        assert traffic.seq_per_s == pytest.approx(48 / traffic.seconds)
        tokenizer = open_model(model.path).tokenizer
        lengths = [len(ids) for ids in tokenizer([r["text"] for r in ROWS])["input_ids"]]
        assert traffic.mean_tokens == pytest.approx(np.mean(lengths))
        padded = next(l for l in model.latency if (l.batch_size, l.seq_length) == (4, 32))
        assert traffic.ratio_to_padded == pytest.approx(
            traffic.seq_per_s / padded.throughput_seq_per_s
        )


def test_runtime_settings_parse_and_io_binding_gives_the_same_logits(tiny_model_dir, tmp_path):
    from export.onnx_export import export_onnx

    parsed = RuntimeSettings.parse("threads=1, spinning=off,io_binding=on,optimization=basic")
    assert parsed == RuntimeSettings(
        threads=1, spinning=False, io_binding=True, optimization="basic"
    )
    assert RuntimeSettings.parse("parallel=on", base=parsed).parallel
    for bad, message in [
        ("speed=3", "expected key=value with key one of threads"),
        ("threads=0", "threads: expected a positive integer"),
        ("spinning=maybe", "spinning: expected on or off"),
        ("optimization=max", "optimization: expected one of disable"),
    ]:
        with pytest.raises(BenchError, match=message):
            RuntimeSettings.parse(bad)
    onnx_path = export_onnx(tiny_model_dir, tmp_path)
    plain = open_model(onnx_path)
    bound = open_model(onnx_path, settings=RuntimeSettings(io_binding=True, cpu_arena=False))
    feeds = plain.encode([r["text"] for r in ROWS[:4]], pad_to=24)
    first = bound.bound(feeds)()
    np.testing.assert_array_equal(plain.run(feeds), first)
    np.testing.assert_array_equal(bound.bound(feeds)(), first)


def test_reports_validate_and_render(report, tmp_path):
    paths = write_reports(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert BenchReport.model_validate(data) == report
    assert (
        json.loads(SCHEMA_FILE.read_text()) == report_json_schema()
    )  # published schema is current
    page = paths["html"].read_text()
    assert 'src="data:image/png;base64,' in page and '<table id="models">' in page
    # header + rows: models (8), paired (1), traffic (2), stages (2)
    assert page.count("<tr>") == 1 + 8 + 1 + 1 + 1 + 2 + 1 + 2 and '<table id="paired">' in page
    markdown = paths["markdown"].read_text()
    assert "Real traffic (tokenization included" in markdown and "% INT8 peak" in markdown
    assert (
        "| onnx | onnx |" in markdown
        and "| finetune |  | 0.5000 | 0.4000 |  |  | 123 |" in markdown
    )
    assert (
        "| student | epoch 1: fp32, pruned (just pruned) | 0.4500 | 0.3500 | "
        "-5.0 (95% CI -8.0 to -2.1) | -5.0 (95% CI -9.0 to -1.0) | 99 |"
    ) in markdown


def test_bad_bench_inputs(tiny_model_dir, tmp_path):
    texts = [r["text"] for r in ROWS]
    with pytest.raises(BenchError, match="model not found"):
        run_benchmark({"x": tmp_path / "none.onnx"}, texts)
    with pytest.raises(BenchError, match="unknown provider 'gpu'"):
        run_benchmark({"x": tiny_model_dir}, texts, options=BenchOptions(provider="gpu"))
    with pytest.raises(BenchError, match="baseline 'y' is not among"):
        run_benchmark({"x": tiny_model_dir}, texts, options=BenchOptions(baseline="y"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BenchError, match="not a model"):
        run_benchmark({"x": tmp_path / "notes.txt"}, texts)


def test_cuda_provider_is_refused_cleanly_without_a_gpu(tiny_model_dir, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    from export.onnx_export import export_onnx

    onnx_path = export_onnx(tiny_model_dir, tmp_path)
    with pytest.raises(BenchError, match="provider 'cuda' is not available"):
        run_benchmark({"x": onnx_path}, ["a text"], options=BenchOptions(provider="cuda"))


def test_python_m_bench_runs_without_the_toolkit(tiny_model_dir, tmp_path, capsys):
    from bench.__main__ import main
    from export.onnx_export import export_onnx

    onnx_path = export_onnx(tiny_model_dir, tmp_path / "onnx")
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": r["text"], "label": ["negative", "positive"][r["label"]]}) + "\n"
            for r in ROWS
        )
    )
    args = [
        f"tiny={onnx_path}",
        "--data",
        str(data),
        *FAST_BENCH,
        "--traffic-batch",
        "8",
        "--emulated",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["machine"]["emulated"] and report["models"][0]["accuracy"]["n"] == 48
    assert "emulated: timings are not hardware figures" in capsys.readouterr().out
    data.write_text('{"text": "fine", "label": "great"}\n')
    assert main(args) == 2
    assert "rows.jsonl:1: unknown label 'great'" in capsys.readouterr().err


def test_both_bench_command_lines_refuse_two_models_with_one_name(tmp_path, capsys, run_cli):
    """`a/model.onnx b/model.onnx` are both named 'model': one CLI used to keep only the second."""
    from bench.__main__ import main
    from bench.options import name_models

    specs = [str(tmp_path / "a" / "model.onnx"), str(tmp_path / "b" / "model.onnx")]
    assert name_models(["x=" + specs[0], specs[1]]) == {
        "x": tmp_path / "a" / "model.onnx",
        "model": tmp_path / "b" / "model.onnx",
    }
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "fine"}\n')
    assert main([*specs, "--data", str(data)]) == 2
    assert "two models are named 'model': use NAME=PATH" in capsys.readouterr().err
    code, _, err = run_cli("bench", *specs, "--texts", data)
    assert (
        code == 2 and err.strip() == "edgebert: error: two models are named 'model': use NAME=PATH"
    )


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]
PROBE = """<script>
window.addEventListener("load", () => document.body.setAttribute("data-probe", JSON.stringify({
  images: [...document.images].map(i => [i.id, i.naturalWidth, i.naturalHeight]),
  rows: Object.fromEntries([...document.querySelectorAll("table")].map(t => [t.id, t.rows.length - 1])),
  headline: document.getElementById("headline").textContent})));
</script></body>"""


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium on this machine (Debian package 'chromium'; .ci/run installs it)",
)
def test_report_renders_in_headless_chromium(report, tmp_path):
    """A real browser decodes the three-panel plot and shows every table filled."""
    page = write_reports(report, tmp_path)["html"].read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE))
    done = subprocess.run(
        [
            CHROMIUM,
            *BROWSER_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, done.stdout[-3000:]
    result = json.loads(html.unescape(found.group(1)))
    ((image_id, width, height),) = result["images"]
    assert image_id == "pareto" and width == 1500 and height == 460  # three panels, 15 x 4.6 in
    assert result["rows"] == {"models": 2 * 4, "paired": 1, "traffic": 2, "stages": 2}
    assert result["headline"].startswith("Pareto front (batch-1 latency vs macro-F1):")


def test_classic_baselines_are_trained_and_benchmarked_beside_the_models(varied_model_dir):
    """TF-IDF + class-balanced LR and complement NB: rows in the report like any model."""
    train = sample_rows("train", 3000, seed=4)
    rows = sample_rows("validation", 48, seed=4)
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    options = BenchOptions(
        batch_sizes=[1, 4],
        seq_lengths=[16],
        threads=1,
        min_seconds=0.02,
        traffic_batch_size=8,
        classic=["tfidf_lr", "tfidf_nb"],
        baseline="torch",
    )
    report = run_benchmark(
        {"torch": varied_model_dir},
        texts,
        labels,
        options=options,
        min_runs=3,
        train=([r["text"] for r in train], [r["label"] for r in train]),
    )
    by_name = {m.name: m for m in report.models}
    assert list(by_name) == ["torch", "classic:tfidf_lr", "classic:tfidf_nb"]
    for name in ("classic:tfidf_lr", "classic:tfidf_nb"):
        model = by_name[name]
        assert model.kind == "sklearn" and model.size_bytes > model.zipped_bytes > 0
        assert [lat.batch_size for lat in model.latency] == [1, 4] and model.traffic.texts == 48
        assert model.accuracy.n == 48 and model.accuracy.vs_baseline is not None
    # trained on 3,000 SST-2 phrases, the linear model beats the untrained transformer
    lr = by_name["classic:tfidf_lr"].accuracy
    assert lr.accuracy > by_name["torch"].accuracy.accuracy and lr.accuracy >= 0.65
    assert lr.vs_baseline.only_model_right > lr.vs_baseline.only_reference_right
    assert "over the best classic baseline (classic:" in headline(report)
    with pytest.raises(BenchError, match="classic baselines need the training rows"):
        run_benchmark({"torch": varied_model_dir}, texts, labels, options=options)


HOST_CPUINFO = "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"


@pytest.mark.parametrize(
    ("cpuid", "flags", "model"),
    [
        ({"AVX2": True, "AVX512F": True, "AVX512VNNI": True}, ["avx2", "avx512f", "avx512_vnni"],
         "AMD EPYC"),
        ({"AVX2": True, "AVX512F": False, "AVX512VNNI": False}, ["avx2"],
         "x86-64 emulated without avx512f, avx512_vnni on AMD EPYC"),
    ],
)  # fmt: skip
def test_machine_reports_the_flags_this_process_can_use(monkeypatch, cpuid, flags, model):
    """Under `qemu-x86_64 -cpu Haswell` /proc/cpuinfo is the host's, but cpuid (what ONNX
    Runtime picks kernels by) has no AVX-512: the report says what the runtime saw."""
    import bench.machine as machine

    monkeypatch.setattr(machine, "read_cpuinfo", lambda: HOST_CPUINFO)
    monkeypatch.setattr(machine, "cpuid_features", lambda: cpuid)
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    info = machine.machine_info()
    assert info["cpu_flags"] == flags and info["cpu_model"] == model
    assert info.get("emulated", False) is (len(flags) == 1)
    fit = machine.int8_fit(info)  # the report says which INT8 file fits the CPU it ran on
    assert fit.startswith("AVX2 without VNNI: ship the dynamic INT8 file" if len(flags) == 1 else
                          "integer dot products: every INT8 file")  # fmt: skip


def test_openvino_engine_runs_the_same_file_in_the_same_interleaved_run(varied_model_dir, tmp_path):
    """`engine=openvino`: OpenVINO's CPU plugin reads the .onnx file itself; its logits match
    ONNX Runtime's on fp32, and a variant times it beside the ORT row."""
    from export.onnx_export import export_onnx

    varied_onnx_file = export_onnx(varied_model_dir, tmp_path / "onnx")
    texts = [r["text"] for r in ROWS]
    ort_logits = open_model(varied_onnx_file).logits(texts)
    ov = open_model(varied_onnx_file, settings=RuntimeSettings(engine="openvino", threads=1))
    assert np.abs(ov.logits(texts) - ort_logits).max() < 1e-4
    assert len(set(ort_logits.argmax(-1))) == 2  # the labels vary: a mismatch would show
    options = BenchOptions(
        batch_sizes=[1], seq_lengths=[16], threads=1, min_seconds=0.02,
        runtime_variants={"m-openvino": "m:engine=openvino"},
    )  # fmt: skip
    report = run_benchmark(
        {"m": varied_onnx_file}, texts, [r["label"] for r in ROWS], options=options
    )
    rows = {m.name: m for m in report.models}
    assert rows["m-openvino"].settings["engine"] == "openvino"
    assert rows["m"].settings["engine"] == "onnxruntime"
    assert rows["m-openvino"].latency[0].p50_ms > 0
    assert rows["m-openvino"].accuracy.accuracy == rows["m"].accuracy.accuracy
    with pytest.raises(BenchError, match="expected one of onnxruntime, openvino"):
        RuntimeSettings.parse("engine=tensorrt")


def _timed(name: str, p50_ms: float, macro_f1: float) -> dict:
    """A report row timed at batch 1 only, with a score (the fields `headline` reads)."""
    stats = dict.fromkeys(("p90_ms", "p99_ms", "mean_ms", "stdev_ms", "min_ms"), p50_ms)
    latency = stats | {
        "batch_size": 1,
        "seq_length": 16,
        "n": 5,
        "p50_ms": p50_ms,
        "ci95_low_ms": p50_ms,
        "ci95_high_ms": p50_ms,
        "throughput_seq_per_s": 1000 / p50_ms,
        "tokenize_p50_ms": 0.1,
    }
    accuracy = {
        "dataset": "d",
        "n": 10,
        "accuracy": macro_f1,
        "macro_precision": macro_f1,
        "macro_recall": macro_f1,
        "macro_f1": macro_f1,
        "per_class": {},
        "confusion_matrix": [],
        "labels": ["a", "b"],
    }
    return {
        "name": name,
        "path": name,
        "kind": "onnx",
        "provider": "cpu",
        "size_bytes": 1_000_000,
        "rss_growth_mb": 1.0,
        "latency": [latency],
        "accuracy": accuracy,
    }


def test_the_headline_names_each_timed_batch_once():
    machine = {
        "platform": "linux",
        "machine": "x86_64",
        "cpu_model": None,
        "cpu_count": 2,
        "cpu_flags": [],
        "threads": 2,
        "onnxruntime": "1",
    }
    report = BenchReport(
        created="now",
        machine=machine,
        baseline="slow",
        models=[_timed("slow", 8.0, 0.7), _timed("fast", 2.0, 0.8)],
    )
    assert "fast, 4.0x at batch 1 faster than slow " in headline(report)

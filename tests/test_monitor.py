"""`edgebert monitor`: the model's bench report is the reference; traffic drifted on purpose
(only texts the model calls negative) and feedback whose labels went wrong raise alarms and
exit 1, the same kind of traffic and faithful feedback do not (exit 0)."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main as bench_main
from compress.serving.predict import Predictor
from compress.serving.traffic_log import TrafficLog
from tests.conftest import sample_rows, write_jsonl


@pytest.fixture(scope="module")
def reference(varied_model_dir, tmp_path_factory):
    """A bench report of the model on 200 labelled rows (its predictions as the labels: the
    reference accuracy is 1.0, so a drop is easy to make on purpose)."""
    root = tmp_path_factory.mktemp("monitor")
    rows = sample_rows("validation", 400, seed=11)
    predicted = Predictor(varied_model_dir).predict([r["text"] for r in rows])
    labelled = [{"text": r["text"], "label": p["label"]} for r, p in zip(rows, predicted)]
    write_jsonl(root / "reference.jsonl", labelled[:200])
    args = ["student=" + str(varied_model_dir), "--data", str(root / "reference.jsonl")]
    args += ["--batch", "1", "--seq", "16", "--min-seconds", "0.02", "--traffic-batch", "0"]
    assert bench_main([*args, "--out", str(root / "bench")]) == 0
    return root, labelled


def log_traffic(path, model_dir, rows) -> None:
    log = TrafficLog(path)
    log.record(Predictor(model_dir).predict([r["text"] for r in rows]))
    log.close()


def monitor_both(run_cli, model, root, tmp_path) -> tuple[int, str, str, dict]:
    """`monitor` with the feedback and traffic files of `tmp_path`: (code, out, err, verdict)."""
    code, out, err = run_cli(
        "monitor", model, "--reference", root / "bench" / "report.json",
        "--feedback", tmp_path / "feedback.jsonl", "--traffic", tmp_path / "traffic.jsonl",
        "--out", tmp_path / "verdict",
    )  # fmt: skip
    verdict_file = tmp_path / "verdict" / "monitor.json"
    return code, out, err, json.loads(verdict_file.read_text()) if verdict_file.is_file() else {}


def test_same_traffic_and_faithful_feedback_raise_no_alarm(
    reference, varied_model_dir, run_cli, tmp_path
):
    root, labelled = reference
    log_traffic(tmp_path / "traffic.jsonl", varied_model_dir, labelled[200:])
    write_jsonl(tmp_path / "feedback.jsonl", labelled[200:300])
    code, out, err, verdict = monitor_both(run_cli, varied_model_dir, root, tmp_path)
    assert code == 0, err
    assert verdict["alarms"] == [] and verdict["reference"]["model"] == "student"
    checks = verdict["checks"]
    assert checks["feedback accuracy"]["now"] == 1.0 and checks["feedback accuracy"]["rows"] == 100
    assert checks["traffic labels"]["psi"] < 0.1 and checks["traffic labels"]["rows"] == 200
    assert "Alarms: none" in out


def test_drifted_traffic_and_worse_feedback_raise_alarms(
    reference, varied_model_dir, run_cli, tmp_path
):
    root, labelled = reference
    negatives = [r for r in labelled[200:] if r["label"] == "negative"]
    assert 5 <= len(negatives) < 100  # a minority in the reference, all of the traffic now
    log_traffic(tmp_path / "traffic.jsonl", varied_model_dir, negatives)
    flipped = [  # the world changed: a third of the rows now carry the other label
        {"text": r["text"], "label": ("positive" if r["label"] == "negative" else "negative")}
        if i % 3 == 0
        else r
        for i, r in enumerate(labelled[200:300])
    ]
    write_jsonl(tmp_path / "feedback.jsonl", flipped)
    code, out, err, verdict = monitor_both(run_cli, varied_model_dir, root, tmp_path)
    assert code == 1, err
    alarms = verdict["alarms"]
    assert any(a.startswith("traffic labels drifted: PSI") for a in alarms), alarms
    assert any(a.startswith("feedback accuracy 0.66") for a in alarms), alarms
    low, high = verdict["checks"]["feedback accuracy"]["difference_ci"]
    assert low < -0.34 < high < 0
    assert "| traffic labels |" in (tmp_path / "verdict" / "monitor.md").read_text()


def test_monitor_needs_something_to_compare(reference, varied_model_dir, run_cli, tmp_path):
    root, _ = reference
    code, _, err = run_cli("monitor", varied_model_dir, "--reference", root / "bench/report.json")
    assert code == 2 and "give --feedback and/or --traffic" in err
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text('{"label": "positive", "score": 0.9}\n')
    code, _, err = run_cli(
        "monitor", varied_model_dir, "--reference", root / "reference.jsonl", "--traffic", traffic
    )
    assert code == 2 and "not a bench report" in err


def test_an_alarm_with_retrain_runs_the_recipe_on_the_feedback_and_compares(
    reference, varied_model_dir, tiny_model_dir, tiny_data, run_cli, tmp_path
):
    from tests.conftest import tiny_recipe

    root, labelled = reference
    flipped = [
        {"text": r["text"], "label": "positive" if r["label"] == "negative" else "negative"}
        for r in labelled[200:260]
    ]
    write_jsonl(tmp_path / "feedback.jsonl", flipped)
    recipe = tmp_path / "retrain.yaml"
    recipe.write_text(tiny_recipe(tiny_model_dir, tiny_data, epochs=1))
    code, out, err = run_cli(
        "monitor", varied_model_dir, "--reference", root / "bench" / "report.json",
        "--feedback", tmp_path / "feedback.jsonl", "--retrain", recipe,
        "--out", tmp_path / "verdict",
    )  # fmt: skip
    assert code == 1, err  # the alarm stands: it is about the model in service
    run = json.loads((tmp_path / "verdict" / "monitor.json").read_text())["checks"]["retrain"]
    run_dir = tmp_path / "verdict" / "retrain-run"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert "feedback.jsonl" in manifest["data_sha256"]  # keyed from the data's common folder
    assert json.loads((run_dir / "metrics.json").read_text())["finetune"]["train_rows"] == 460
    assert run["validation_rows"] == 100 and run["new_model"].startswith(str(run_dir))
    assert run["new_minus_old"]["resamples"] == 2000
    assert "Retrained with the feedback:" in out
    diff = run["new_minus_old"]
    points = f"{100 * diff['macro_f1_diff']:+.1f} (95% CI {100 * diff['macro_f1_ci'][0]:+.1f} to"
    assert f"in points: accuracy {100 * diff['accuracy_diff']:+.1f} (95% CI" in out
    assert f"macro-F1 {points}" in out

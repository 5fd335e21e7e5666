"""Bring your own data: any column names, label names read from the file, bad rows skipped
and reported when the recipe says so."""

from __future__ import annotations

import csv
import json

import yaml

from tests.conftest import sample_rows


def write_reviews(path) -> None:
    """A CSV as users have them: other column names, string labels, and one empty review."""
    rows = sample_rows("train", 120, seed=4)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review", "rating_class"])
        for i, row in enumerate(rows):
            label = "happy" if row["label"] == 1 else "unhappy"
            writer.writerow([i, "" if i == 7 else row["text"], label])


def own_data_recipe(tmp_path, model, on_bad_rows: str | None) -> str:
    data = tmp_path / "reviews.csv"
    write_reviews(data)
    fields = {"train": str(data), "text_field": "review", "label_field": "rating_class"}
    if on_bad_rows:
        fields["on_bad_rows"] = on_bad_rows
    fields["max_length"] = 32
    stage = {"type": "finetune", "model": str(model), "training": {"epochs": 1, "batch_size": 16}}
    return yaml.safe_dump({"name": "own", "seed": 3, "data": fields, "stages": [stage]})


def test_a_csv_with_other_columns_string_labels_and_an_empty_row(tmp_path, tiny_model_dir, run_cli):
    recipe = tmp_path / "own.yaml"
    recipe.write_text(own_data_recipe(tmp_path, tiny_model_dir, None))
    code, _, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 2
    assert err.strip().splitlines()[-1].endswith("reviews.csv:9: empty text after cleaning")
    recipe.write_text(own_data_recipe(tmp_path, tiny_model_dir, "skip"))
    code, out, err = run_cli("run", recipe, "--out", tmp_path / "runs")
    assert code == 0, err
    run_dir = tmp_path / "runs" / out.strip().split("/")[-1]
    resolved = yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text())
    assert resolved["data"]["labels"] == ["happy", "unhappy"]  # sorted, written into the run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["skipped_rows"] == {
        "count": 1,
        "first": ["reviews.csv:9: empty text after cleaning"],
    }
    summary = (run_dir / "summary.txt").read_text()
    assert summary.startswith("data: skipped 1 bad rows (reviews.csv:9: empty text after cleaning)")
    metrics = json.loads((run_dir / "metrics.json").read_text())["finetune"]
    assert metrics["train_rows"] + metrics["validation"]["n"] == 119  # 120 rows less the empty one
    model = run_dir / "stages" / "00-finetune" / "model"
    assert json.loads((model / "config.json").read_text())["id2label"] == {
        "0": "happy",
        "1": "unhappy",
    }

"""Every shipped recipe validates and finds its data (`--dry-run`), against small stand-in data
sets named like the real ones, so a renamed field or stage breaks the suite, not a user's run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import sample_rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))
SHARED = ROOT.parent / "shared" / "datasets"


def transfer_datasets(node) -> list[str]:
    """Staged sets a recipe names as distillation transfer text (`transfer: {datasets: ...}`)."""
    if isinstance(node, dict):
        found = list((node.get("transfer") or {}).get("datasets", []))
        return found + [n for value in node.values() for n in transfer_datasets(value)]
    if isinstance(node, list):
        return [n for item in node for n in transfer_datasets(item)]
    return []


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    """30-row train/validation/test files for each data set a shipped recipe names, with the
    real label names where ../shared has them (a fresh clone falls back to two labels)."""
    root = tmp_path_factory.mktemp("datasets")
    names = {yaml.safe_load(p.read_text())["data"].get("dataset") for p in SHIPPED} - {None}
    names |= {name for p in SHIPPED for name in transfer_datasets(yaml.safe_load(p.read_text()))}
    for name in names - {"sst2-sample"}:  # the packaged sample is real and small already
        real = SHARED / name / "labels.json"
        labels = json.loads(real.read_text()) if real.is_file() else ["negative", "positive"]
        for split in ("train", "validation", "test"):
            rows = sample_rows(split if split != "test" else "validation", 30, seed=len(split))
            write_jsonl(
                root / name / f"{split}.jsonl",
                [{"text": r["text"], "label": i % len(labels)} for i, r in enumerate(rows)],
            )
        (root / name / "labels.json").write_text(json.dumps(labels))
    return root


def test_every_recipe_in_the_folder_is_covered():
    assert len(SHIPPED) >= 10 and (ROOT / "recipes" / "quickstart.yaml") in SHIPPED


@pytest.mark.parametrize("recipe", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipe_passes_dry_run(recipe, standins, run_cli, monkeypatch):
    monkeypatch.setenv("EDGEBERT_DATASETS", str(standins))
    stages = len(yaml.safe_load(recipe.read_text())["stages"])
    code, out, err = run_cli("run", recipe.stem, "--dry-run")
    assert code == 0, err
    assert out.startswith(f"recipe ok: {stages} stages; data: ")

"""`edgebert monitor --retrain`: on an alarm, run the recipe again with the feedback rows added
and compare the new model with the old one. It lives in the engine, not in `serving`, because it
trains: the deployment runtime imports no training code."""

from __future__ import annotations

import json
from pathlib import Path

from bench.paired import paired_difference
from bench.runtime import open_model
from compress.data.task_data import load_task_data
from compress.engine.recipe import load_recipe
from compress.engine.runner import run_recipe


def retrain(recipe: Path, feedback: Path, out: Path, old_model: Path) -> dict:
    """Run `recipe` with the feedback rows appended to its training split (`data.extra_train`),
    then compare the new model with the old one on the recipe's validation rows, paired (the
    feedback itself is training data now, so it cannot judge the new model)."""
    parsed = load_recipe(recipe, [f"data.extra_train=[{json.dumps(str(feedback.resolve()))}]"])
    made = run_recipe(parsed, out, run_dir=out / "retrain-run", overwrite=True)
    state = json.loads((made.root / "state.json").read_text(encoding="utf-8"))
    new_model = made.root / state["last_model"]  # relative to the run (absolute stays absolute)
    data = load_task_data(parsed.data, parsed.seed, parsed.task)
    rows = data.validation
    old, new = (open_model(m).logits(rows.texts).argmax(-1) for m in (old_model, new_model))
    paired = paired_difference(rows.labels, old, new, len(data.label_names))
    return {
        "recipe": str(recipe),
        "run_dir": str(made.root),
        "new_model": str(new_model),
        "validation_rows": len(rows),
        "new_minus_old": paired,
    }

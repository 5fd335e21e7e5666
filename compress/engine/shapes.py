"""Turn a budget search's trial (a student shape) into the recipe that trains it.

A trial's recipe is the user's recipe after the teacher: the teacher stage ran once for the
whole search, so every `@teacher` becomes the path of its model, and bench stages are left to
the search (it times each trial itself and benches only the chosen file). The shape is written
into the student stage: its kept layers, the pruning fraction (heads and FFN alike), the width
cut (when searched), the vocabulary cut and QAT. Epoch-bound modifier settings are pulled
inside the rung's epochs, so a screening trial of 2 epochs still prunes before its last epoch
and quantizes in it.
"""

from __future__ import annotations

import copy
from pathlib import Path

from compress.engine.config import TrainingConfig


def stage_names(raw: dict) -> list[str]:
    return [s.get("name") or s["type"] for s in raw["stages"]]


def trial_recipe(
    raw: dict,
    teacher: str,
    teacher_model: Path,
    student: str,
    shape: dict,
    epochs: int | None,
    max_train_rows: int | None = None,
    transfer: bool = True,
) -> dict:
    """The raw recipe one trial runs (a new dict; `raw` is left as it was); a screening rung
    gives its `epochs`, maybe fewer training rows, and may leave out the distillation's
    transfer set (`transfer=False`)."""
    out = copy.deepcopy(raw)
    out.pop("search", None)
    out.pop("target", None)
    data = out.setdefault("data", {})
    data["score_test"] = False  # the proof scores the chosen file on test; no trial does
    if max_train_rows is not None:
        data["max_train_rows"] = max_train_rows
    names = stage_names(out)
    after = out["stages"][names.index(teacher) + 1 :]
    out["stages"] = [_pointing_at(s, f"@{teacher}", str(teacher_model)) for s in after]
    out["stages"] = [s for s in out["stages"] if s["type"] != "bench"]
    stage = out["stages"][stage_names(out).index(student)]
    apply_shape(stage, shape, epochs)
    if not transfer:
        stage["with"] = [
            {"distill": {k: v for k, v in m["distill"].items() if k != "transfer"}}
            if "distill" in m
            else m
            for m in stage.get("with", [])
        ]
    return out


def without_teacher(raw: dict, student: str) -> dict:
    """The same trial recipe with the student's distillation removed: hard labels only. A
    transfer set of augmented copies becomes the twin's `data.augment` (the same perturbations,
    each copy labelled by the row it came from), so the twin trains on about as many rows and
    steps, on the same schedule, as the distilled student; unlabeled transfer files have no
    label to learn and are left out."""
    out = copy.deepcopy(raw)
    stage = out["stages"][stage_names(out).index(student)]
    distill = next((m["distill"] for m in stage.get("with", []) if "distill" in m), {})
    stage["with"] = [m for m in stage.get("with", []) if "distill" not in m]
    augment = (distill.get("transfer") or {}).get("augment")
    if augment and not (out.get("data") or {}).get("augment"):
        out.setdefault("data", {})["augment"] = augment
    return out


def apply_shape(stage: dict, shape: dict, epochs: int | None) -> None:
    """Write `shape` into a raw training stage, with `epochs` (a screening rung) if given."""
    training = stage.setdefault("training", {})
    if epochs is not None:
        training["epochs"] = epochs
    total = int(training.get("epochs", TrainingConfig.model_fields["epochs"].default))
    stage["keep_layers"] = list(shape["keep_layers"])
    if shape["min_count"] > 0:
        stage["vocab"] = {**(stage.get("vocab") or {}), "min_count": shape["min_count"]}
    else:
        stage.pop("vocab", None)
    modifiers = [m for m in stage.get("with", []) if not {"prune_structured", "qat"} & set(m)]
    if shape["min_count"] > 0:  # a cut vocabulary: the teacher reads its own tokens
        modifiers = [
            {"distill": {**m["distill"], "retokenize": True}} if "distill" in m else m
            for m in modifiers
        ]
    old = {name: cfg for m in stage.get("with", []) for name, cfg in m.items()}
    if shape["prune"] > 0 or shape.get("hidden", 0.0) > 0:
        modifiers.append({"prune_structured": _prune(old.get("prune_structured"), shape, total)})
    if shape["qat"]:
        qat = dict(old.get("qat") or {})
        qat["start_epoch"] = min(int(qat.get("start_epoch", total)), total)
        modifiers.append({"qat": qat})
    stage["with"] = modifiers


def _prune(old: dict | None, shape: dict, total: int) -> dict:
    """The stage's pruning settings at the shape's fraction, cut before the last epoch (when
    there are two or more) so the pruned model trains on."""
    last_cut = max(1, total - 1)
    cfg = dict(old or {})  # the schema's defaults fill the rest
    start = min(int(cfg.get("start_epoch", 1)), last_cut)
    end = min(int(cfg.get("end_epoch") or start), last_cut)
    return (
        cfg
        | {"heads": shape["prune"], "ffn": shape["prune"], "start_epoch": start}
        | ({"hidden": shape["hidden"]} if "hidden" in shape else {})
        | {"end_epoch": max(start, end)}
    )


def _pointing_at(value, ref: str, path: str):
    """`value` with every string equal to `ref` replaced by `path`, at any depth."""
    if isinstance(value, dict):
        return {k: _pointing_at(v, ref, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_pointing_at(v, ref, path) for v in value]
    return path if value == ref else value

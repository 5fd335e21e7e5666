"""Registries of stage types by name.

Top-level stages (`finetune`, `export`, `bench`, ...) form the recipe's `stages:` list; modifiers
(`distill`, `prune_*`, `qat`, ...) act inside a training stage's `with:` list. A new stage module
registers itself with a decorator and is listed in `compress/stages/__init__.py`; the recipe
schema and the engine pick it up without changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.stages.base import Modifier, Stage

STAGES: dict[str, type["Stage"]] = {}
MODIFIERS: dict[str, type["Modifier"]] = {}


def register_stage(cls):
    STAGES[cls.type_name] = cls
    return cls


def register_modifier(cls):
    MODIFIERS[cls.type_name] = cls
    return cls


def check_stage_order(stage_configs: list) -> None:
    """Let each stage refuse an impossible position (e.g. export before any model exists)."""
    names: set[str] = set()
    for index, config in enumerate(stage_configs):
        cls = STAGES[config.type]
        cls.check_position(config, stage_configs[:index], index)
        name = config.name or config.type
        if name in names:
            raise ValueError(f"stages[{index}]: stage name '{name}' is used twice; set 'name'")
        names.add(name)


def build_stage(config, index: int) -> "Stage":
    return STAGES[config.type](config, index)

"""Every stage and modifier type a recipe can name: the one list, by `type_name`.

A new stage or modifier is a class with a `Config`; adding it to the tuple below is all the
recipe schema, the engine and search need. The recipe model (`compress.engine.recipe`) reads these
dicts when it is built; stages and modifiers never import this module, so imports stay one-way.
"""

from __future__ import annotations

from compress.modifiers.base import Modifier
from compress.modifiers.distill import Distill
from compress.modifiers.prune import PruneStructured
from compress.modifiers.qat import QAT
from compress.modifiers.sparsity import PruneUnstructured
from compress.stages.base import Stage
from compress.stages.bench import BenchStage
from compress.stages.export import ExportStage
from compress.stages.finetune import FinetuneStage, TrainStage
from compress.stages.static import StaticStage

STAGES: dict[str, type[Stage]] = {
    cls.type_name: cls for cls in (FinetuneStage, TrainStage, StaticStage, ExportStage, BenchStage)
}
MODIFIERS: dict[str, type[Modifier]] = {
    cls.type_name: cls for cls in (Distill, PruneStructured, PruneUnstructured, QAT)
}


def check_stage_order(stage_configs: list, task: str = "text-classification") -> None:
    """Let each stage refuse an impossible position (e.g. export before any model exists) or
    a task it cannot do (a static student labels whole texts, not tokens)."""
    names: set[str] = set()
    for index, config in enumerate(stage_configs):
        if task not in STAGES[config.type].tasks:
            raise ValueError(f"stages[{index}]: a {config.type} stage cannot do {task}")
        previous = [STAGES[c.type] for c in stage_configs[:index]]
        STAGES[config.type].check_position(config, previous, index)
        name = config.name or config.type
        if name in names:
            raise ValueError(f"stages[{index}]: stage name '{name}' is used twice; set 'name'")
        names.add(name)


def build_stage(config, index: int) -> Stage:
    return STAGES[config.type](config, index)

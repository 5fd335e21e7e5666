"""The stage contract: one entry of a recipe's `stages:` list.

The engine calls `setup`, `run`, `finish` in turn. Stages that train (`trains = True`) get a
`with:` list of modifiers (`compress.modifiers`), which act inside their training loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from compress.engine.config import StageConfig

if TYPE_CHECKING:
    from compress.engine.context import RunContext


class Stage:
    """One step of a recipe. Subclasses set `type_name` and `Config` and override hooks."""

    type_name: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    trains: ClassVar[bool] = False  # makes a model by training; takes a `with:` modifier list
    tasks: ClassVar[tuple[str, ...]] = ("text-classification", "token-classification")

    def __init__(self, config: Any, index: int):
        self.config = config
        self.index = index

    @property
    def name(self) -> str:
        return self.config.name or self.config.type

    @classmethod
    def check_position(cls, config: Any, previous: list[type[Stage]], index: int) -> None:
        """Raise ValueError when this stage cannot run after the `previous` stage classes."""

    def setup(self, ctx: RunContext) -> None:
        """Prepare inputs (load a model, build a graph)."""

    def run(self, ctx: RunContext) -> dict:
        """Do the work; return the metrics to record for this stage."""
        return {}

    def finish(self, ctx: RunContext) -> None:
        """Publish outputs (register the produced model for `@name` references)."""

"""State shared by the stages of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.progress import to_stderr_unless_terminal
from compress.data.splits import TaskData
from compress.engine.rundir import RunDir
from compress.errors import EdgebertError
from compress.models.names import resolve_model


@dataclass
class RunContext:
    """What stages read and publish: the recipe, data, run dir, and models made so far."""

    recipe: Any
    run_dir: RunDir
    data: TaskData
    console: Console
    models: dict[str, Path] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Path]] = field(default_factory=dict)  # stage -> variant -> file
    last_model: Path | None = None
    resuming: bool = False
    cache_dir: Path | None = None  # teacher logits shared with other runs (a search's trials)

    def resolve_model_ref(self, ref: str, field: str | None = None) -> Path:
        """`@name` (a model an earlier stage made), `@previous`, a known name, or a path.
        With `field` (e.g. `stages[1].model`), an error names the recipe field first."""
        try:
            return self._resolve(ref)
        except EdgebertError as exc:
            if field is None:
                raise
            raise EdgebertError(f"{field}: {exc}") from None

    def _resolve(self, ref: str) -> Path:
        if ref == "@previous":
            if self.last_model is None:
                raise EdgebertError("'@previous' used before any stage produced a model")
            return self.last_model
        if ref.startswith("@"):
            name = ref[1:]
            if name not in self.models:
                made = ", ".join(f"@{n}" for n in self.models) or "none yet"
                raise EdgebertError(f"unknown model reference '{ref}' (models so far: {made})")
            return self.models[name]
        return resolve_model(ref)

    def files_of_model(self, model_dir: Path) -> dict[str, Path]:
        """Shippable files the stage that made `model_dir` published (e.g. its QAT graph)."""
        stage = next((name for name, path in self.models.items() if path == model_dir), None)
        return dict(self.artifacts.get(stage, {})) if stage else {}

    def log_progress(self, line: str) -> None:
        """A progress line: always in run.log; on stderr only when it is not a terminal (a
        terminal shows a live bar instead)."""
        self.run_dir.log(line)
        to_stderr_unless_terminal(line)

    def publish_model(self, stage_name: str, path: Path) -> None:
        self.models[stage_name] = path
        self.last_model = path

    def log(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)
        self.run_dir.log(message)


@dataclass
class StageScope:
    """What a modifier may know of the stage it acts in: the run, the stage's name and folder,
    and the metadata the stage's saved model will carry (so files a modifier writes, such as
    QAT's ONNX, describe themselves the same way)."""

    run: RunContext
    stage_name: str
    folder: Path
    model_meta: dict = field(default_factory=dict)

    def publish_file(self, variant: str, path: Path) -> None:
        """A shippable file this stage made, for later export/bench stages (`@stage` files)."""
        self.run.artifacts.setdefault(self.stage_name, {})[variant] = path

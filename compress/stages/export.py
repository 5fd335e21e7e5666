"""`export` stage: the model an earlier stage made -> ONNX (+ fused, PTQ INT8, .ort), with parity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.engine.config import StageConfig
from compress.errors import EdgebertError
from compress.stages.base import Stage
from export.options import ExportOptions
from export.pipeline import export_model


class ExportConfig(StageConfig, ExportOptions):
    """Which model to export; the export options are `export.options.ExportOptions`, shared with
    `edgebert export`."""

    type: Literal["export"]
    model: str = Field("@previous", description="@stage, a model directory, or @previous")

    def options(self) -> ExportOptions:
        return ExportOptions(**self.model_dump(include=set(ExportOptions.model_fields)))


class ExportStage(Stage):
    type_name = "export"
    Config = ExportConfig

    @classmethod
    def check_position(cls, config, previous, index) -> None:
        if config.model == "@previous" and not any(stage.trains for stage in previous):
            raise ValueError(
                f"stages[{index}].model: '@previous' but no training stage comes before export"
            )

    def run(self, ctx) -> dict:
        model_dir = ctx.resolve_model_ref(self.config.model, f"stages[{self.index}].model")
        data = ctx.data
        made_elsewhere = ctx.files_of_model(model_dir)
        out_dir = ctx.run_dir.stage_dir(self.index, self.name) / "onnx"
        result = export_model(
            model_dir,
            out_dir,
            data.validation.texts,
            options=self.config.options(),
            log=ctx.log,
            calibration_texts=data.train.texts,
            made_elsewhere=made_elsewhere,
        )
        # Files it only checked (the training stage's QAT graph) stay published by their maker.
        ctx.artifacts[self.name] = {
            variant: path for variant, path in result.files.items() if variant not in made_elsewhere
        }
        metrics = {
            "files": {k: str(v) for k, v in result.files.items()},
            "sizes_bytes": result.sizes,
            "parity": result.parity,
        }
        ctx.run_dir.write_json(
            ctx.run_dir.stage_dir(self.index, self.name) / "metrics.json", metrics
        )
        if result.failures:
            raise EdgebertError(f"[{self.name}] " + "; ".join(result.failures))
        return metrics

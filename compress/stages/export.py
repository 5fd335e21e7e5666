"""`export` stage: the model an earlier stage made -> ONNX (+ fused, PTQ INT8, .ort), with parity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.errors import EdgebertError
from compress.config import StageConfig, Strict
from compress.stages.base import Stage
from export.pipeline import ExportOptions, export_model


class Calibration(Strict):
    rows: int = Field(256, ge=8, le=100_000, description="training rows used to calibrate")
    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    per_channel: bool = True


class Parity(Strict):
    rows: int = Field(512, ge=1, description="validation rows compared with PyTorch")
    max_abs_diff: float = Field(1e-4, gt=0, description="fp32: max |logit difference|")
    min_label_agreement: float = Field(0.99, ge=0, le=1, description="INT8: labels that agree")
    enforce: list[str] | None = Field(
        None, description="variants whose failed check fails the stage (default: all); the "
        "others, e.g. a PTQ baseline, are measured and reported only",
    )


class ExportConfig(StageConfig):
    type: Literal["export"]
    model: str = Field("@previous", description="@stage, a model directory, or @previous")
    optimize: bool = Field(True, description="also save ORT's fused-transformer graph")
    quantize: list[Literal["dynamic", "static"]] = Field(default_factory=list)
    calibration: Calibration = Field(default_factory=Calibration)
    formats: list[Literal["onnx", "ort"]] = Field(default_factory=lambda: ["onnx"])
    ort_variant: str | None = Field(None, description="variant converted to .ort (default: last)")
    parity: Parity = Field(default_factory=Parity)


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
        model_dir = ctx.resolve_model_ref(self.config.model)
        data = ctx.data
        options = ExportOptions(
            optimize=self.config.optimize,
            quantize=self.config.quantize,
            calibration_rows=self.config.calibration.rows,
            calibration_method=self.config.calibration.method,
            per_channel=self.config.calibration.per_channel,
            ort_format="ort" in self.config.formats,
            ort_variant=self.config.ort_variant,
            parity_rows=self.config.parity.rows,
            max_abs_diff=self.config.parity.max_abs_diff,
            min_label_agreement=self.config.parity.min_label_agreement,
            enforce=self.config.parity.enforce,
        )
        out_dir = ctx.run_dir.stage_dir(self.index, self.name) / "onnx"
        result = export_model(
            model_dir, out_dir, data.validation.texts, options=options, log=ctx.log,
            calibration_texts=data.train.texts,
        )
        ctx.artifacts[self.name] = dict(result.files)
        metrics = {
            "files": {k: str(v) for k, v in result.files.items()},
            "sizes_bytes": result.sizes,
            "parity": result.parity,
        }
        ctx.run_dir.write_json(f"stages/{self.index:02d}-{self.name}/metrics.json", metrics)
        if result.failures:
            raise EdgebertError(f"[{self.name}] " + "; ".join(result.failures))
        return metrics


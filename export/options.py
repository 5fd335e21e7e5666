"""Export options: one model, read by `export_model`, `edgebert export` and the recipe's
`export` stage alike, so a default is declared once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

QUANTIZE_MODES = ("dynamic", "static", "fp16_table")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Calibration(_Section):
    rows: int = Field(256, ge=8, le=100_000, description="training rows used to calibrate")
    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    per_channel: bool = True
    reduce_range: bool = Field(
        False, description="7-bit weights: for x86 CPUs without VNNI (AVX2 only), see README"
    )


class Parity(_Section):
    rows: int = Field(512, ge=1, description="validation rows compared with PyTorch")
    max_abs_diff: float = Field(1e-4, gt=0, description="fp32: max |logit difference|")
    min_label_agreement: float = Field(0.99, ge=0, le=1, description="INT8: labels that agree")
    enforce: list[str] | None = Field(
        None,
        description="variants whose failed check fails the stage (default: all); the "
        "others, e.g. a PTQ baseline, are measured and reported only",
    )


class ExportOptions(_Section):
    optimize: bool = Field(True, description="also save ORT's fused-transformer graph")
    quantize: list[Literal["dynamic", "static", "fp16_table"]] = Field(
        default_factory=list,
        description="dynamic/static: INT8 post-training quantization; fp16_table: lookup "
        "tables (embeddings; all of a static student) stored in float16",
    )
    calibration: Calibration = Field(default_factory=Calibration)
    formats: list[Literal["onnx", "ort", "openvino"]] = Field(default_factory=lambda: ["onnx"])
    ort_variant: str | None = Field(
        None, description="variant converted to .ort and OpenVINO IR (default: the last made)"
    )
    parity: Parity = Field(default_factory=Parity)

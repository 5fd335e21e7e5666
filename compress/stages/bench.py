"""`bench` stage: time and score what the run made, next to the baselines a user would pick."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from bench.errors import BenchError
from bench.options import BenchOptions
from bench.report import write_reports
from bench.runner import run_benchmark
from compress.config import StageConfig
from compress.errors import EdgebertError
from compress.stages.base import Stage
from export.onnx_export import export_onnx
from export.quantize import optimum_dynamic_int8


class BenchConfig(StageConfig, BenchOptions):
    """Which of the run's models to time, next to which baselines; timing options are
    `bench.options.BenchOptions`, shared with both bench command lines."""

    type: Literal["bench"]
    exports: list[str] = Field(
        default_factory=list,
        description="export stages whose files to time (default: every export stage so far)",
    )
    torch_fp32: list[str] = Field(
        default_factory=list, description="models (@stage) also timed in PyTorch fp32"
    )
    ort_fp32: list[str] = Field(
        default_factory=list, description="models (@stage) exported and timed in ORT fp32"
    )
    optimum_dynamic_int8: list[str] = Field(
        default_factory=list, description="models (@stage) quantized by Optimum as the peer"
    )
    split: Literal["validation", "test"] = "validation"

    def options(self) -> BenchOptions:
        return BenchOptions(**self.model_dump(include=set(BenchOptions.model_fields)))


class BenchStage(Stage):
    type_name = "bench"
    Config = BenchConfig

    def run(self, ctx) -> dict:
        cfg = self.config
        out_dir = ctx.run_dir.stage_dir(self.index, self.name)
        models: dict[str, Path] = {}
        for ref in cfg.torch_fp32:
            models[f"{ref.lstrip('@')}:torch_fp32"] = ctx.resolve_model_ref(ref)
        exported: dict[str, Path] = {}  # one fp32 export per model serves both baselines

        def onnx_of(ref: str) -> Path:
            if ref not in exported:
                onnx_dir = out_dir / f"{ref.lstrip('@')}-onnx"
                export_onnx(ctx.resolve_model_ref(ref), onnx_dir)
                exported[ref] = onnx_dir
            return exported[ref]

        for ref in cfg.ort_fp32:
            models[f"{ref.lstrip('@')}:ort_fp32"] = onnx_of(ref) / "model.onnx"
        for ref in cfg.optimum_dynamic_int8:
            models[f"{ref.lstrip('@')}:optimum_dynamic_int8"] = optimum_dynamic_int8(
                onnx_of(ref), onnx_of(ref)
            )
        for stage in cfg.exports or list(ctx.artifacts):
            for variant, path in ctx.artifacts.get(stage, {}).items():
                models[f"{stage}:{variant}"] = path
        split = ctx.data.split(cfg.split)
        stage_rows = [
            {
                "stage": name,
                "accuracy": result.get("validation", {}).get("accuracy"),
                "macro_f1": result.get("validation", {}).get("macro_f1"),
                "parameters": result.get("parameters"),
                "wall_seconds": result.get("wall_seconds"),
            }
            for name, result in ctx.results.items()
        ]
        report = self._run(
            models, split, f"{ctx.recipe.data.dataset or 'data'} {cfg.split}", stage_rows
        )
        paths = write_reports(report, out_dir)
        ctx.log(f"[{self.name}] reports: {paths['markdown']}")
        return {
            "reports": {k: str(v) for k, v in paths.items()},
            "models": [m.name for m in report.models],
        }

    def _run(self, models: dict[str, Path], split, dataset: str, stage_rows: list[dict]):
        try:
            return run_benchmark(
                models,
                split.texts,
                split.labels,
                dataset=dataset,
                options=self.config.options(),
                stages=stage_rows,
            )
        except BenchError as exc:
            raise EdgebertError(f"stages[{self.index}] (bench): {exc}") from None

"""`bench` stage: time and score what the run made, next to the baselines a user would pick."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from bench.errors import BenchError
from bench.report import write_reports
from bench.runner import run_benchmark
from bench.runtime import RuntimeSettings, model_settings
from compress.errors import EdgebertError
from compress.config import StageConfig
from compress.stages.base import Stage
from export.onnx_export import export_onnx
from export.quantize import optimum_dynamic_int8


class BenchConfig(StageConfig):
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
    baseline: str | None = Field(None, description="entry that ratios are computed against")
    split: Literal["validation", "test"] = "validation"
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1)
    seq_lengths: list[int] = Field(default_factory=lambda: [128], min_length=1)
    threads: int = Field(2, ge=1, le=256)
    min_seconds: float = Field(2.0, gt=0, description="timed seconds per model and shape")
    runtime: str = Field("", description="ORT settings for every model, e.g. spinning=off")
    runtime_variants: dict[str, str] = Field(
        default_factory=dict,
        description="NAME: 'MODEL:key=value,...' times MODEL again under other ORT settings",
    )
    traffic_batch_size: int | None = Field(
        32, ge=1, description="batch of the end-to-end real-traffic pass (null: skip)"
    )


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
            models[f"{ref.lstrip('@')}:optimum_dynamic_int8"] = optimum_dynamic_int8(onnx_of(ref), onnx_of(ref))
        for stage in cfg.exports or list(ctx.artifacts):
            for variant, path in ctx.artifacts.get(stage, {}).items():
                models[f"{stage}:{variant}"] = path
        settings = self._settings(models)
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
        report = run_benchmark(
            models, split.texts, split.labels, dataset=f"{ctx.recipe.data.dataset or 'data'} {cfg.split}",
            batch_sizes=cfg.batch_sizes, seq_lengths=cfg.seq_lengths, threads=cfg.threads,
            baseline=cfg.baseline, min_seconds=cfg.min_seconds, stages=stage_rows,
            settings=settings, traffic_batch_size=cfg.traffic_batch_size,
        )
        paths = write_reports(report, out_dir)
        ctx.log(f"[{self.name}] reports: {paths['markdown']}")
        return {"reports": {k: str(v) for k, v in paths.items()}, "models": list(models)}

    def _settings(self, models: dict[str, Path]) -> dict[str, RuntimeSettings]:
        """Parse `runtime` and `runtime_variants`; variants join `models` under their names."""
        try:
            return model_settings(models, self.config.runtime, self.config.runtime_variants)
        except BenchError as exc:
            raise EdgebertError(f"stages[{self.index}] (bench runtime settings): {exc}") from None

"""`bench` stage: time and score what the run made, next to the baselines a user would pick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from bench.errors import BenchError
from bench.options import BenchOptions
from bench.paired import paired_difference
from bench.report import write_reports
from bench.runner import run_benchmark
from compress.engine.config import StageConfig
from compress.engine.summary import Reference, run_summary
from compress.errors import EdgebertError
from compress.stages.base import Stage
from compress.stages.finetune import TrainingStageConfig
from export.onnx_export import export_onnx
from export.openvino_ir import nncf_int8
from export.quantize import calibration_feeds, optimum_dynamic_int8

NNCF_CALIBRATION_ROWS = 300  # training rows the OpenVINO peer is calibrated on


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
    openvino_int8: list[str] = Field(
        default_factory=list,
        description="models (@stage) quantized by NNCF and run in OpenVINO: the OpenVINO peer",
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
        for ref in cfg.openvino_int8:
            onnx_file = onnx_of(ref) / "model.onnx"  # calibrated on training rows, never bench's
            feeds = calibration_feeds(onnx_file, ctx.data.train.texts, NNCF_CALIBRATION_ROWS)
            models[f"{ref.lstrip('@')}:openvino_int8"] = nncf_int8(onnx_file, onnx_of(ref), feeds)
        for stage in cfg.exports or list(ctx.artifacts):
            for variant, path in ctx.artifacts.get(stage, {}).items():
                models[f"{stage}:{variant}"] = path
        report = self._run(ctx, models)
        paths = write_reports(report, out_dir)
        ctx.log(f"[{self.name}] reports: {paths['markdown']}")
        return {
            "reports": {k: str(v) for k, v in paths.items()},
            "models": [m.name for m in report.models],
            "summary": run_summary(report, self._shipped(ctx), self._teacher(ctx), paths["html"]),
        }

    @staticmethod
    def _shipped(ctx) -> set[str]:
        """Every file the run made to ship (export variants, QAT graphs); baselines are not."""
        return {str(path) for files in ctx.artifacts.values() for path in files.values()}

    def _teacher(self, ctx) -> Reference:
        """The run's first trained model (the first published), scored on the bench split by
        its own stage."""
        name = next(iter(ctx.models), "teacher")
        metrics = metrics_on(ctx.results.get(name, {}), self.config.split)
        return Reference(name, metrics.get("accuracy"), metrics.get("macro_f1"))

    def _run(self, ctx, models: dict[str, Path]):
        split = ctx.data.split(self.config.split)
        try:
            return run_benchmark(
                models,
                split.texts,
                split.labels,
                dataset=f"{ctx.recipe.data.dataset or 'data'} {self.config.split}",
                options=self._options(ctx),
                stages=self._stage_rows(ctx),
                teacher_predictions=teacher_predictions(ctx.results, self.config.split),
                progress_log=ctx.log_progress,
                train=(ctx.data.train.texts, ctx.data.train.labels),
            )
        except BenchError as exc:
            raise EdgebertError(f"stages[{self.index}] (bench): {exc}") from None

    def _options(self, ctx) -> BenchOptions:
        """The stage's options; the model2vec row distils the model the run started from."""
        options = self.config.options()
        if "model2vec" not in options.classic:
            return options
        named = options.model2vec_base
        field = f"stages[{self.index}].model2vec_base"
        base = ctx.resolve_model_ref(named, field) if named else self._base_model(ctx)
        return options.model_copy(update={"model2vec_base": str(base)})

    def _base_model(self, ctx) -> Path:
        """The model the run's first training stage starts from (a name or a directory)."""
        for index, stage in enumerate(ctx.recipe.stages):
            if isinstance(stage, TrainingStageConfig) and not stage.model.startswith("@"):
                return ctx.resolve_model_ref(stage.model, f"stages[{index}].model")
        raise EdgebertError(
            f"stages[{self.index}].model2vec_base: no training stage starts from a named model; "
            "name the encoder model2vec distils from"
        )

    def _stage_rows(self, ctx) -> list[dict]:
        labels = ctx.data.split(self.config.split).labels
        return stage_rows(ctx.results, ctx.models, self.config.split, labels)


def metrics_on(result: dict, split: str) -> dict:
    """A stage's metrics on `split`, or on validation when it has none there."""
    return result.get(split) or result.get("validation") or {}


def teacher_predictions(results: dict[str, dict], split: str) -> list[int] | None:
    """The run's teacher (its first stage) on the bench split: the ledger's reference."""
    first = next(iter(results.values()), {})
    return metrics_on(first, split).get("predictions")


def stage_rows(
    results: dict[str, dict], models: dict[str, Path], split: str, labels=None
) -> list[dict]:
    """The run's accuracy ledger, one row per step: each stage's saved model on the bench split
    (validation when the stage has none there) with parameters, weight size and wall time, and
    before it each epoch of a stage whose modifiers changed the model (validation split only:
    epochs are scored there). With `labels`, every row after the teacher carries its paired
    difference from the teacher on the same rows. Used by the bench stage and by `edgebert
    bench` on files that came out of a run directory."""
    reference = teacher_predictions(results, split)
    teacher = next(iter(results), None)

    def versus(predictions) -> dict | None:
        if any(x is None for x in (labels, reference, predictions)):
            return None
        if not len(predictions) == len(reference) == len(labels):
            return None
        classes = max(max(labels), max(reference), max(predictions)) + 1
        return paired_difference(labels, reference, predictions, classes)

    rows = []
    for name, result in results.items():
        if split == "validation" and result.get("modifiers"):
            rows += epoch_rows(name, result.get("history", []), versus)
        metrics = metrics_on(result, split)
        model = models.get(name)
        weights = sum(p.stat().st_size for p in model.glob("*.safetensors")) if model else None
        best = result.get("best_epoch")
        rows.append(
            {
                "stage": name,
                "step": f"saved model (epoch {best})" if best else "saved model",
                "accuracy": metrics.get("accuracy"),
                "macro_f1": metrics.get("macro_f1"),
                "parameters": result.get("parameters"),
                "size_bytes": weights or None,
                "wall_seconds": result.get("wall_seconds"),
                "vs_teacher": None if name == teacher else versus(metrics.get("predictions")),
            }
        )
    return rows


def epoch_rows(name: str, history: list[dict], versus) -> list[dict]:
    """A training stage's epochs as ledger rows: fp32, pruned (an epoch that pruned shows the
    model before and right after it), fake-quant INT8."""
    if not history:
        return []
    first = history[0].get("before_reshape", history[0])
    rows = []
    for entry in history:
        points = [entry]
        if "before_reshape" in entry:
            points = [entry["before_reshape"], entry]
        for point in points:
            pruned = (point.get("parameters") or 0) < (first.get("parameters") or 0)
            kind = "fake-quant INT8" if entry.get("fake_quant") else "fp32"
            step = f"epoch {entry['epoch']}: {kind}" + (", pruned" if pruned else "")
            if point is entry and "before_reshape" in entry:
                step += " (just pruned)"
            rows.append(
                {
                    "stage": name,
                    "step": step,
                    "accuracy": point.get("accuracy"),
                    "macro_f1": point.get("macro_f1"),
                    "parameters": point.get("parameters"),
                    "vs_teacher": versus(point.get("predictions")),
                }
            )
    return rows


def run_stage_rows(files: list[Path], split: str, labels=None) -> tuple[list[dict], list | None]:
    """(ledger rows, teacher predictions) of the run directory the first of `files` came from
    (none: not from a run): `edgebert bench` on a run's ONNX files shows how each step of that
    run got there."""
    for file in files:
        for folder in [file, *file.parents]:
            metrics, stages = folder / "metrics.json", folder / "stages"
            if (folder / "manifest.json").is_file() and metrics.is_file() and stages.is_dir():
                results = json.loads(metrics.read_text(encoding="utf-8"))
                models = {
                    name: model
                    for name in results
                    for model in stages.glob(f"*-{name}/model")
                    if model.is_dir()
                }
                rows = stage_rows(results, models, split, labels)
                return rows, teacher_predictions(results, split)
    return [], None

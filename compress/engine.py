"""Runs a validated recipe: loads data, makes the run directory, drives the stages in order."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import yaml
from rich.console import Console
from transformers import set_seed

from compress.context import RunContext
from compress.data import file_sha256, load_task_data
from compress.manifest import build_manifest
from compress.rundir import RunDir, write_text_atomic
from compress.stages.registry import build_stage


def run_recipe(recipe, out_base: Path, console: Console | None = None) -> RunDir:
    """Execute every stage; the run directory records the outcome even on failure."""
    console = console or Console(stderr=True)
    set_seed(recipe.seed)
    # Data problems are input problems: surface them before any directory or work exists.
    data = load_task_data(recipe.data, recipe.seed)
    run_dir = RunDir.create(out_base, recipe.name)
    resolved = recipe.model_dump(mode="json", by_alias=True)
    resolved_text = yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)
    write_text_atomic(run_dir.root / "recipe.resolved.yaml", resolved_text)
    manifest = build_manifest(
        recipe.seed,
        {str(p): file_sha256(p) for p in data.files},
        hashlib.sha256(resolved_text.encode()).hexdigest(),
    )
    run_dir.write_json("manifest.json", manifest)
    ctx = RunContext(recipe=recipe, run_dir=run_dir, data=data, console=console)
    ctx.log(f"run directory: {run_dir.root}")
    summary: dict[str, dict] = {}
    try:
        for index, config in enumerate(recipe.stages):
            stage = build_stage(config, index)
            started = time.perf_counter()
            stage.setup(ctx)
            metrics = stage.run(ctx)
            stage.finish(ctx)
            metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
            run_dir.write_json(f"stages/{index:02d}-{stage.name}/metrics.json", metrics)
            summary[stage.name] = metrics
            ctx.results[stage.name] = metrics
            run_dir.write_json("metrics.json", summary)
        manifest["status"] = "completed"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    except BaseException as exc:
        manifest["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        raise
    finally:
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        run_dir.write_json("manifest.json", manifest)
    return run_dir

"""Runs a validated recipe: loads data, makes (or resumes) the run directory, drives stages.

`state.json` in the run directory records each completed stage and what it published, so a run
killed at any point continues with `edgebert run --resume RUN_DIR`: completed stages are not
redone, and a training stage continues from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from transformers import set_seed

from bench.files import (
    LOCK_FILE,
    clean_stale_swaps,
    first_line,
    is_disk_full,
    write_text_atomic,
)
from compress.data.splits import file_sha256
from compress.data.task_data import load_task_data
from compress.engine.catalog import STAGES, build_stage
from compress.engine.context import RunContext
from compress.engine.manifest import build_manifest
from compress.engine.recipe import check_stage_files
from compress.engine.rundir import RunDir
from compress.errors import EdgebertError, RunInterrupted
from compress.training import distributed
from compress.training.loop_state import INTERRUPTS

STATE_FILE = "state.json"
RESOLVED_RECIPE = "recipe.resolved.yaml"


def _portable(path: Path, root: Path) -> str:
    """A path as state.json keeps it: relative to the run directory when inside it, so a run
    copied to another machine (or folder) resumes wherever it now lies."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _located(value: str, root: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _snapshot(ctx: RunContext, completed: int) -> dict:
    root = ctx.run_dir.root
    return {
        "completed_stages": completed,
        "models": {k: _portable(v, root) for k, v in ctx.models.items()},
        "artifacts": {
            s: {k: _portable(v, root) for k, v in a.items()} for s, a in ctx.artifacts.items()
        },
        "results": ctx.results,
        "last_model": _portable(ctx.last_model, root) if ctx.last_model else None,
    }


def _restore(ctx: RunContext, state: dict) -> int:
    root = ctx.run_dir.root
    ctx.models = {k: _located(v, root) for k, v in state["models"].items()}
    ctx.artifacts = {
        s: {k: _located(v, root) for k, v in a.items()} for s, a in state["artifacts"].items()
    }
    ctx.results = state["results"]
    ctx.last_model = _located(state["last_model"], root) if state["last_model"] else None
    return int(state["completed_stages"])


def data_hashes(files: list[Path]) -> dict[str, str]:
    """SHA-256 of each data file, keyed by its path relative to the files' common folder (the
    data set's root): a data set moved to another folder or machine keeps its keys."""
    resolved = [Path(f).resolve() for f in files]
    base = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    return {str(p.relative_to(base)): file_sha256(p) for p in resolved}


def is_run_dir(folder: Path) -> bool:
    """Whether `folder` is a run directory edgebert wrote (its recipe and manifest are there)."""
    return (folder / RESOLVED_RECIPE).is_file() and (folder / "manifest.json").is_file()


def prepare_run_dir(out_base: Path, name: str, run_dir: Path | None, overwrite: bool) -> RunDir:
    """A new timestamped directory, or the exact one asked for, locked for this process.
    `--overwrite` empties only a run directory (anything else may be a user's own folder), and
    only after taking its lock, so a run still live in another process is never touched."""
    if run_dir is None:
        rd = RunDir.create(out_base, name)
        rd.lock()
        return rd
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise EdgebertError(
                f"run directory {run_dir} already exists: use --resume {run_dir} to continue it "
                "or --overwrite to replace it"
            )
        if run_dir.is_symlink() or not is_run_dir(run_dir):
            raise EdgebertError(
                f"--overwrite: {run_dir} is not a run directory (no {RESOLVED_RECIPE} and "
                "manifest.json): refusing to delete it; choose another --run-dir"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgebertError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    rd = RunDir(run_dir)
    rd.lock()
    for entry in run_dir.iterdir():  # the lock file stays: it is what we hold
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return rd


def _resumed_state(run_dir: Path, hashes: dict) -> tuple[dict, dict | None]:
    """(manifest, saved stage state) of a run being resumed; its data must not have changed."""
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    if sorted((manifest.get("data_sha256") or {}).values()) != sorted(hashes.values()):
        raise EdgebertError(f"{run_dir}: the data files changed since this run started")
    state_path = run_dir / STATE_FILE
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else None
    manifest.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return manifest, state


def _open_run_dir(
    recipe, hashes: dict, out_base: Path, run_dir: Path | None, overwrite: bool, resume: bool
) -> tuple[RunDir, dict, dict | None]:
    """(run directory, manifest, saved stage state or None): a resumed run's own, whose data
    must not have changed, or a new one with the resolved recipe and a fresh manifest."""
    if resume:
        assert run_dir is not None
        rd = RunDir(run_dir)
        rd.lock()  # before reading its state: a second --resume must not read it half-written
        try:
            clean_stale_swaps(run_dir)
            manifest, state = _resumed_state(run_dir, hashes)
        except BaseException:
            rd.unlock()
            raise
    else:
        rd = prepare_run_dir(out_base, recipe.name, run_dir, overwrite)
        resolved = recipe.model_dump(mode="json", by_alias=True)
        resolved_text = yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)
        write_text_atomic(rd.root / RESOLVED_RECIPE, resolved_text)
        manifest = build_manifest(
            recipe.seed, hashes, hashlib.sha256(resolved_text.encode()).hexdigest()
        )
        state = None
    return rd, manifest, state


def skipped_rows_line(skipped: list[str]) -> str:
    """One line for the log and the summary: how many bad rows were left out, and the first."""
    return f"data: skipped {len(skipped)} bad rows ({'; '.join(skipped[:3])}{'; ...' * (len(skipped) > 3)})"


def _close(ctx: RunContext) -> None:
    """Print each bench stage's summary last (where a user looks) and keep it as summary.txt."""
    summaries = [r["summary"] for r in ctx.results.values() if r.get("summary")]
    if ctx.data.skipped_rows:
        summaries.insert(0, skipped_rows_line(ctx.data.skipped_rows))
    if summaries and distributed.is_main():
        text = "\n\n".join(summaries)
        ctx.console.print("\n" + text, markup=False, highlight=False, soft_wrap=True)
        write_text_atomic(ctx.run_dir.root / "summary.txt", text + "\n")


def _log_data_notes(ctx: RunContext, manifest: dict) -> None:
    """Rows the data loader skipped or added, in the log and (skipped) the manifest."""
    data = ctx.data
    if data.skipped_rows:
        manifest["skipped_rows"] = {"count": len(data.skipped_rows), "first": data.skipped_rows[:5]}
        ctx.log(skipped_rows_line(data.skipped_rows))
    if data.augmented_rows:
        ctx.log(
            f"augmentation: {data.augmented_rows} rows added to the training split "
            f"({len(data.train)} in all)"
        )


def run_recipe(
    recipe,
    out_base: Path,
    console: Console | None = None,
    run_dir: Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    until: str | None = None,
    cache_dir: Path | None = None,
    _helper: bool = False,
) -> RunDir:
    """Execute every stage (or those up to and including the stage named `until`: a GPU
    machine makes the teacher, a CPU machine continues with `--resume`); the run directory
    records the outcome even on failure.

    Under torchrun, ranks other than 0 train into a scratch directory that is removed at the
    end and skip the stages that only transform (export, bench): rank 0 writes the run."""
    if distributed.active() and not distributed.is_main() and not _helper:
        scratch = Path(tempfile.mkdtemp(prefix=f"edgebert-rank{distributed.rank()}-"))
        try:
            quiet = Console(stderr=True, quiet=True)
            return run_recipe(
                recipe, scratch, quiet, run_dir=scratch / "run", resume=False, _helper=True
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    console = console or Console(stderr=True)
    last_index = stage_index(recipe, until)
    set_seed(recipe.seed)
    # Data problems are input problems: surface them before any directory or work exists.
    data = load_task_data(recipe.data, recipe.seed, recipe.task)
    if recipe.data.labels is None:  # read from the training file: the run records which
        recipe.data.labels = list(data.label_names)
    check_stage_files(recipe)
    hashes = data_hashes(data.files)
    rd, manifest, state = _open_run_dir(recipe, hashes, out_base, run_dir, overwrite, resume)
    manifest["status"] = "running"
    rd.write_json("manifest.json", manifest)
    ctx = RunContext(
        recipe=recipe, run_dir=rd, data=data, console=console, resuming=resume, cache_dir=cache_dir
    )
    completed = _restore(ctx, state) if state else 0
    ctx.log(
        f"run directory: {rd.root}" + (f" (resuming after {completed} stages)" if resume else "")
    )
    _log_data_notes(ctx, manifest)
    try:
        with INTERRUPTS:  # SIGTERM/Ctrl-C anywhere: a clean stop within seconds
            _run_stages(ctx, completed, last_index, _helper)
        if last_index < len(recipe.stages) - 1:
            manifest["status"] = f"stopped after stage '{until}'"
            ctx.log(
                f"stopped after stage '{until}'; continue with: edgebert run --resume {rd.root}"
            )
        else:
            manifest["status"] = "completed"
            _close(ctx)
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise RunInterrupted(
            f"interrupted; continue with: edgebert run --resume {rd.root}"
        ) from None
    except BaseException as exc:
        manifest["status"] = f"failed: {type(exc).__name__}: {first_line(exc)}"
        if is_disk_full(exc):
            raise EdgebertError(
                f"disk full ({first_line(exc, 160)}); the finished stages and the last "
                f"checkpoint are kept: free space, then continue with: "
                f"edgebert run --resume {rd.root}"
            ) from None
        raise
    finally:
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_manifest_if_possible(rd, manifest)
        rd.unlock()
    return rd


def _write_manifest_if_possible(rd: RunDir, manifest: dict) -> None:
    """The closing manifest; on a full disk the previous one stays (resume does not need the
    new status), and the error the user sees is the one that stopped the run."""
    try:
        rd.write_json("manifest.json", manifest)
    except OSError as exc:
        if not is_disk_full(exc):
            raise


def stage_index(recipe, name: str | None) -> int:
    """Index of the stage called `name` (the last stage when None); a clear error otherwise."""
    if name is None:
        return len(recipe.stages) - 1
    names = [build_stage(config, i).name for i, config in enumerate(recipe.stages)]
    if name not in names:
        raise EdgebertError(f"--until: no stage named '{name}' (stages: {', '.join(names)})")
    return names.index(name)


def _run_stages(ctx: RunContext, completed: int, last_index: int, helper: bool) -> None:
    """Every stage not yet completed, in order, up to `last_index`; each one's metrics and the
    run's state are written as soon as it finishes, so a stop loses at most the stage in
    progress."""
    rd = ctx.run_dir
    for index, config in enumerate(ctx.recipe.stages[: last_index + 1]):
        if index < completed or (helper and not STAGES[config.type].trains):
            continue
        stage = build_stage(config, index)
        started = time.perf_counter()
        stage.setup(ctx)
        metrics = stage.run(ctx)
        with INTERRUPTS.critical():  # a finished stage is recorded whole or not at all
            stage.finish(ctx)
            metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
            stage_dir = rd.stage_dir(index, stage.name)
            rd.write_json(stage_dir / "metrics.json", metrics)
            ctx.results[stage.name] = metrics
            rd.write_json("metrics.json", ctx.results)
            rd.write_json(STATE_FILE, _snapshot(ctx, index + 1))
            shutil.rmtree(stage_dir / "checkpoint", ignore_errors=True)  # its model is saved

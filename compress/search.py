"""Hyperparameter search: a recipe's `search:` block runs the recipe as N trials.

Each trial is the same recipe with some fields overridden (the dotted paths `--set` uses, e.g.
`stages.1.training.lr`), run into its own sub-run directory; Optuna proposes the values (grid,
random or TPE) and gets the validation metric of the chosen stage back. The search directory
ends with a summary (JSON and Markdown), a plot of every trial, and `best.yaml`: the recipe
with the best values written in, ready for `edgebert run`.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import optuna
import yaml

from bench.files import write_json_atomic, write_text_atomic
from compress.catalog import STAGES
from compress.config import Range, SearchConfig
from compress.errors import EdgebertError
from compress.recipe import apply_overrides, parse_recipe


def _sample(trial, key: str, values):
    if isinstance(values, Range):
        if values.integer:
            return trial.suggest_int(key, int(values.low), int(values.high), log=values.log)
        return trial.suggest_float(key, values.low, values.high, log=values.log)
    return trial.suggest_categorical(key, values)


def _study(config: SearchConfig, seed: int):
    """An Optuna study; a grid is enqueued point by point (Optuna's GridSampler stops the study
    from inside its callback, which the ask/tell loop here does not allow)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if config.method == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if config.method == "grid":
        keys = list(config.space)
        for point in itertools.product(*(config.space[k] for k in keys)):  # type: ignore[misc]
            study.enqueue_trial(dict(zip(keys, point)))
    return study


def _score(metrics: dict, stage: str, metric: str) -> float:
    try:
        return float(metrics[stage]["validation"][metric])
    except (KeyError, TypeError):
        raise EdgebertError(
            f"search.stage: stage '{stage}' reported no validation {metric}"
        ) from None


def _trained_stage(recipe) -> str:
    names = [s.name or s.type for s in recipe.stages if STAGES[s.type].trains]
    if not names:
        raise EdgebertError("search: the recipe has no training stage to score")
    return names[-1]


def run_search(path: Path, overrides: list[str], out_base: Path, run_trial) -> Path:
    """Run every trial with `run_trial(recipe, run_dir)`; returns the search directory."""
    text = path.read_text(encoding="utf-8")
    base = parse_recipe(text, str(path), overrides, base_dir=path.parent)
    config = base.search
    stage = config.stage or _trained_stage(base)
    if stage not in [s.name or s.type for s in base.stages]:
        raise EdgebertError(f"search.stage: no stage named '{stage}' in the recipe")
    for key, values in config.space.items():  # every path must lead to a valid recipe
        probe = values.low if isinstance(values, Range) else values[0]
        try:
            parse_recipe(text, str(path), [*overrides, *_sets({key: probe})], base_dir=path.parent)
        except EdgebertError as exc:
            raise EdgebertError(f"search.space.{key}: {str(exc).split(': ', 1)[-1]}") from None
    root = out_base / f"{base.name}-search-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True, exist_ok=False)
    study = _study(config, base.seed)
    rows: list[dict] = []
    for number in range(config.trials):
        if config.method == "grid" and number >= _grid_size(config):
            break
        trial = study.ask()
        params = {key: _sample(trial, key, values) for key, values in config.space.items()}
        recipe = parse_recipe(text, str(path), [*overrides, *_sets(params)], base_dir=path.parent)
        recipe.search = None
        run_dir = root / "trials" / f"trial-{number:03d}"
        started = time.perf_counter()
        try:
            run_trial(recipe, run_dir)
            metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
            value = _score(metrics, stage, config.metric)
        except EdgebertError as exc:  # a trial that fails is recorded, the search goes on
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            rows.append(
                {"trial": number, "params": params, "error": str(exc), "run_dir": str(run_dir)}
            )
            continue
        study.tell(trial, value)
        rows.append(
            {
                "trial": number,
                "params": params,
                config.metric: value,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "run_dir": str(run_dir),
            }
        )
        _write_summary(root, config, stage, rows)
    scored = [r for r in rows if config.metric in r]
    if not scored:
        _write_summary(root, config, stage, rows)
        raise EdgebertError(f"search: every trial failed; see {root}/summary.json")
    best = max(scored, key=lambda r: r[config.metric])
    raw = apply_overrides(yaml.safe_load(text), [*overrides, *_sets(best["params"])])
    raw.pop("search", None)
    for field in ("train", "validation", "test", "labels"):  # best.yaml lives elsewhere
        value = getattr(base.data, field)
        if isinstance(value, Path) and isinstance(raw.get("data", {}).get(field), str):
            raw["data"][field] = str(value)
    raw["name"] = f"{raw['name']}-best"
    write_text_atomic(root / "best.yaml", yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    _write_summary(root, config, stage, rows, best)
    return root


def _literal(value) -> str:
    """A value as `--set` text that YAML reads back as the same type (YAML 1.1 reads `1e-05`,
    without a dot, as a string)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, sep, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if sep and "." not in mantissa else text
    return json.dumps(value)


def _sets(params: dict) -> list[str]:
    return [f"{key}={_literal(value)}" for key, value in params.items()]


def _grid_size(config: SearchConfig) -> int:
    size = 1
    for values in config.space.values():
        size *= len(values)  # type: ignore[arg-type]
    return size


def _write_summary(
    root: Path, config: SearchConfig, stage: str, rows: list[dict], best: dict | None = None
) -> None:
    metric = config.metric
    write_json_atomic(
        root / "summary.json",
        {
            "method": config.method,
            "metric": metric,
            "stage": stage,
            "best": best,
            "trials": rows,
        },
    )
    keys = list(config.space)
    ranked = sorted(rows, key=lambda r: -r.get(metric, float("-inf")))
    lines = [
        f"Search ({config.method}) on validation {metric} of stage '{stage}'",
        "",
        "| rank | trial | " + " | ".join(keys) + f" | {metric} | wall s |",
        "|---:|---:|" + "---|" * len(keys) + "---:|---:|",
    ]
    for rank, row in enumerate(ranked, 1):
        score = f"{row[metric]:.4f}" if metric in row else "failed"
        lines.append(
            f"| {rank} | {row['trial']} | "
            + " | ".join(str(row["params"][k]) for k in keys)
            + f" | {score} | {row.get('wall_seconds', '')} |"
        )
    write_text_atomic(root / "summary.md", "\n".join(lines) + "\n")
    _plot(root / "trials.png", rows, metric)


def _plot(path: Path, rows: list[dict], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if metric in r]
    if not scored:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    xs = [r["trial"] for r in scored]
    ys = [r[metric] for r in scored]
    best_so_far = [max(ys[: i + 1]) for i in range(len(ys))]
    ax.scatter(xs, ys, label="trial", zorder=3)
    ax.step(xs, best_so_far, where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

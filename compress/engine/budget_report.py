"""What a budget search writes: budget.json, budget.md (every trial, the binding bound, the
chosen file and its test numbers), front.png (each trial a point: metric against batch-1
latency, batch-32 latency and size) and summary.txt (all of it in one line). The test-split
bench of the chosen file goes to `proof/` as the usual JSON, Markdown and HTML report."""

from __future__ import annotations

from pathlib import Path

from bench.files import write_json_atomic, write_text_atomic
from bench.report import interval_text, write_reports
from compress.engine.budget_choice import binding, rejection

PANELS = (("b1_ms", "batch-1 p50 ms"), ("b32_ms", "batch-32 p50 ms"), ("size_mb", "size MB"))


def verdict(row: dict, target) -> str:
    """Why a trial was or was not eligible (the same rule as the choice); a screened shape
    either went on to the full rung or stopped there."""
    broke = rejection(row, target)
    if row.get("rung") == "screen" and broke != "failed":
        return "to the full rung" if row.get("promoted") else "stopped at screening"
    return "kept" if broke is None else ("failed" if broke == "failed" else f"breaks {broke}")


def shape_text(params: dict) -> str:
    qat = "QAT" if params.get("qat") else "no QAT"
    width = f"hidden {params['hidden']}, " if "hidden" in params else ""
    return (
        f"layers {params['keep_layers']}, prune {params['prune']}, {width}"
        f"min_count {params['min_count']}, {qat}"
    )


def write_budget_report(
    root: Path, target, metric: str, teacher: float, rows: list, proof: dict | None
) -> None:
    chosen = proof["chosen"] if proof else None
    bound = binding(rows, chosen, target)
    data = {
        "target": target.model_dump(mode="json"),
        "metric": metric,
        "teacher_validation": teacher,
        "schedule": schedule_text(target),
        "binding": bound,
        "trials": rows,
        "chosen": chosen,
    }
    lines = _header(target, metric, teacher, bound) + _trial_table(rows, target, metric)
    if proof:
        paths = write_reports(proof["report"], root / "proof")
        data["proof"] = {k: v for k, v in proof.items() if k != "report"}
        data["proof"]["reports"] = {k: str(v) for k, v in paths.items()}
        lines += _proof_lines(proof, metric, target)
        summary = summary_line(proof, target, metric, bound)
    else:
        summary = f"budget: no trial kept max_drop {target.max_drop} ({metric}); binding: {bound}"
    write_json_atomic(root / "budget.json", data)
    write_text_atomic(root / "budget.md", "\n".join(lines) + "\n")
    write_text_atomic(root / "summary.txt", summary + "\n")
    plot_front(root / "front.png", rows, metric, teacher - target.max_drop / 100, chosen)


def schedule_text(target) -> str:
    screen = target.screen
    if screen is None:
        return "one rung: every trial trains the recipe's full epochs"
    rows = f" on {screen.max_train_rows} training rows" if screen.max_train_rows else ""
    quantized = "" if screen.qat else " in float (timed as its export's INT8)"
    return (
        f"two-rung successive halving: every shape trains {screen.epochs} epoch(s){rows}"
        f"{quantized}; the {screen.keep} fastest within max_drop + {screen.slack} train in full"
    )


def _header(target, metric: str, teacher: float, bound: str) -> list[str]:
    limits = [f"max_drop {target.max_drop} points of validation {metric}"]
    if target.max_latency_ms is not None:
        limits.append(f"max_latency_ms {target.max_latency_ms} at batch {target.latency_batch}")
    if target.max_size_mb is not None:
        limits.append(f"max_size_mb {target.max_size_mb}")
    return [
        "# Accuracy budget",
        "",
        f"- Target: {'; '.join(limits)}; objective {target.objective}; timed at sequence "
        f"length {target.seq_length}, interleaved with the peer (Optimum dynamic INT8 of the "
        "teacher).",
        f"- Teacher on validation (ONNX Runtime): {metric} {teacher:.4f}.",
        f"- Schedule: {schedule_text(target)}.",
        f"- Binding: {bound}.",
        "",
    ]


def _trial_table(rows: list, target, metric: str) -> list[str]:
    lines = [
        f"| rung | trial | shape | {metric} | drop | b1 ms | x peer b1 | b32 ms | x peer b32 "
        "| MB | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if "score" not in row:
            lines.append(
                f"| {row['rung']} | {row['trial']} | {shape_text(row['params'])} | "
                f"failed: {row.get('error', '')[:80]} |||||||| failed |"
            )
            continue
        lines.append(
            f"| {row['rung']} | {row['trial']} | {shape_text(row['params'])} | "
            f"{row['score']:.4f} | {row['drop']:.2f} | {row['b1_ms']:.2f} | "
            f"{row['b1_x_peer']:.2f} | {row['b32_ms']:.1f} | {row['b32_x_peer']:.2f} | "
            f"{row['size_mb']:.1f} | {verdict(row, target)} |"
        )
    return lines + [""]


def _ci(pair: dict, metric: str) -> str:
    return interval_text(pair[f"{metric}_diff"], pair[f"{metric}_ci"])


def _proof_lines(proof: dict, metric: str, target) -> list[str]:
    chosen = proof["chosen"]
    lines = [
        "## Chosen file",
        "",
        f"- Trial {chosen['trial']} ({shape_text(chosen['params'])}): `{chosen['file']}`.",
        f"- Validation, against the teacher: {_ci(proof['validation_vs_teacher'], metric)} points.",
        "",
        "## Test split, scored once (interleaved bench in `proof/report.md`)",
        "",
        f"| file | {metric} | b1 ms | x peer b1 | b32 ms | x peer b32 | MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model in proof["report"].models:
        lat = {x.batch_size: x for x in model.latency}
        lines.append(
            f"| {model.name} | {proof['test_scores'][model.name][metric]:.4f} | "
            f"{lat[1].p50_ms:.2f} | {lat[1].ratio_to_baseline_p50:.2f} | {lat[32].p50_ms:.1f} | "
            f"{lat[32].ratio_to_baseline_p50:.2f} | {model.size_bytes / 1e6:.1f} |"
        )
    lines += ["", "| paired, test | points | McNemar p |", "|---|---:|---:|"]
    for label, pair in proof["paired"].items():
        lines.append(f"| {label} | {_ci(pair, metric)} | {pair['mcnemar_p']:.3g} |")
    return lines + [""]


def summary_line(proof: dict, target, metric: str, bound: str) -> str:
    chosen, paired = proof["chosen"], proof["paired"]
    row = next(m for m in proof["report"].models if m.name == "chosen")
    lat = {x.batch_size: x for x in row.latency}
    return (
        f"budget: max_drop {target.max_drop} ({metric}) -> trial {chosen['trial']} "
        f"({shape_text(chosen['params'])}), {row.size_bytes / 1e6:.1f} MB, "
        f"{lat[1].ratio_to_baseline_p50:.1f}x/{lat[32].ratio_to_baseline_p50:.1f}x the peer at "
        f"batch 1/32 (seq {target.seq_length}); validation drop {chosen['drop']:.2f}; test "
        f"vs teacher {_ci(paired['chosen - teacher'], metric)}, vs peer "
        f"{_ci(paired['chosen - peer'], metric)}, distillation adds "
        f"{_ci(paired['chosen - no-teacher twin'], metric)}; binding: {bound}"
    )


def plot_front(path: Path, rows: list, metric: str, floor: float, chosen: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if "score" in r]
    if not scored:
        return
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=100, sharey=True)
    for ax, (key, label) in zip(axes, PANELS):
        for rung, marker in (("screen", "o"), ("full", "s")):
            points = [r for r in scored if r["rung"] == rung]
            ax.scatter(
                [r[key] for r in points],
                [r["score"] for r in points],
                marker=marker,
                facecolors="none" if rung == "screen" else "tab:blue",
                edgecolors="tab:blue",
                label=rung,
            )
        if chosen:
            ax.scatter(
                [chosen[key]],
                [chosen["score"]],
                marker="*",
                s=200,
                c="tab:red",
                label="chosen",
                zorder=4,
            )
        ax.axhline(floor, color="tab:gray", linestyle="--", label="teacher - max_drop")
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"validation {metric}")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

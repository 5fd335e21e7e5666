"""Benchmark reports: JSON (machine-readable), Markdown (for READMEs) and one self-contained
HTML page with the latency-vs-accuracy Pareto plot embedded."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from bench.files import write_bytes_atomic
from bench.schema import BenchReport

SCHEMA_FILE = Path(__file__).parent / "report.schema.json"
CLASSIC_KINDS = ("sklearn", "peer")  # bench.classic's rows: TF-IDF, and model2vec and fastText


def report_json_schema() -> dict:
    return BenchReport.model_json_schema()


def _headline(model) -> tuple[float, float | None]:
    """(p50 ms at the smallest batch and shortest timed sequence, macro-F1 or None)."""
    return p50_at(model, min(lat.batch_size for lat in model.latency)), _quality(model)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated by a model that is both faster (or equal) and more accurate."""
    front = []
    for name, (lat, acc) in points.items():
        dominated = any(
            (l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc)
            for other, (l2, a2) in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])


def _latency_at(model, batch_size: int):
    """The model's latency row at `batch_size` (shortest timed sequence), or None."""
    rows = [lat for lat in model.latency if lat.batch_size == batch_size]
    return min(rows, key=lambda lat: lat.seq_length) if rows else None


def p50_at(model, batch_size: int) -> float | None:
    """p50 ms at `batch_size` and the shortest timed sequence (None: that batch was not timed)."""
    lat = _latency_at(model, batch_size)
    return lat.p50_ms if lat else None


def _quality(model) -> float | None:
    return model.accuracy.macro_f1 if model.accuracy else None


def batch_range(report: BenchReport) -> tuple[int, int]:
    """The smallest and the largest batch size timed."""
    sizes = sorted({lat.batch_size for m in report.models for lat in m.latency})
    return sizes[0], sizes[-1]


def headline(report: BenchReport) -> str:
    """One sentence for "should I ship it?": the Pareto front, and its fastest model against
    the baseline (speed at the smallest and largest batch, size, accuracy cost)."""
    points = {
        m.name: (lat, f1) for m in report.models for lat, f1 in [_headline(m)] if f1 is not None
    }
    if not points:
        return "No accuracy data: latency only."
    front = pareto_front(points)
    text = f"Pareto front (batch-1 latency vs macro-F1): {', '.join(front)}." + _over_classic(
        report
    )
    base = next((m for m in report.models if m.name == report.baseline), None)
    best = next(m for m in report.models if m.name == front[0])
    if base is None or best is base:
        return text
    small, large = batch_range(report)
    ratios = []
    for batch in dict.fromkeys((small, large)):  # one batch size timed: one ratio
        mine, theirs = _latency_at(best, batch), _latency_at(base, batch)
        if mine and theirs:
            ratios.append(f"{theirs.p50_ms / mine.p50_ms:.1f}x at batch {batch}")
    size = base.size_bytes / best.size_bytes
    smaller = f"{size:.1f}x smaller" if size >= 1 else f"{1 / size:.1f}x larger"
    deltas = _deltas(best, base)
    return (
        f"{text} Fastest on it: {best.name}, {' and '.join(ratios)} faster than {base.name} "
        f"and {smaller} ({best.size_bytes / 1e6:.1f} MB); {', '.join(deltas)} against it."
    )


def _over_classic(report: BenchReport) -> str:
    """How much the best model file adds over the best classic baseline, as a sentence."""
    scored = [m for m in report.models if _quality(m) is not None]
    classic = [m for m in scored if m.kind in CLASSIC_KINDS]
    neural = [m for m in scored if m.kind not in CLASSIC_KINDS]
    if not classic or not neural:
        return ""
    best_classic = max(classic, key=_quality)
    best = max(neural, key=_quality)
    gain = 100 * (_quality(best) - _quality(best_classic))
    return (
        f" The best model file ({best.name}) adds {gain:+.1f} macro-F1 points over the best "
        f"classic baseline ({best_classic.name}, {_quality(best_classic):.4f})."
    )


def _deltas(model, base) -> list[str]:
    """ "macro-F1 -0.6 points (95% CI -1.9 to +0.7)" and the same for accuracy."""
    paired = model.accuracy.vs_baseline if model.accuracy else None
    out = []
    for label, key in (("macro-F1", "macro_f1"), ("accuracy", "accuracy")):
        if paired is not None:
            diff, bounds = getattr(paired, f"{key}_diff"), getattr(paired, f"{key}_ci")
            out.append(f"{label} {interval_text(diff, bounds, ' points')}")
        elif model.accuracy and base.accuracy:
            out.append(
                f"{label} {100 * (getattr(model.accuracy, key) - getattr(base.accuracy, key)):+.1f} points"
            )
    return out


def pareto_png(report: BenchReport) -> bytes | None:
    """Three panels side by side: macro-F1 against batch-1 latency, against the largest batch's
    latency, and against file size. Each model has its own colour and marker, named in one
    legend (no labels on the points, so close points never print over each other)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [m for m in report.models if _quality(m) is not None]
    if not scored:
        return None
    small, large = batch_range(report)
    panels = [
        (f"p50 ms, batch {small} (log)", lambda m: p50_at(m, small)),
        (f"p50 ms, batch {large} (log)", lambda m: p50_at(m, large)),
        ("size MB (log)", lambda m: m.size_bytes / 1e6),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=100)
    for ax, (label, x_of) in zip(axes, panels):
        _panel(ax, scored, x_of, label)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False
    )
    fig.suptitle("Accuracy against latency and size (dashed: Pareto front)")
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(names) - 1) // 4), 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


MARKERS = "osD^v<>PX*"


def _decades(points: dict[str, tuple[float, float]]) -> float:
    """How many powers of ten the x values span (few: label the minor ticks too)."""
    xs = [x for x, _ in points.values() if x > 0]
    return math.log10(max(xs) / min(xs)) if xs else 0.0


def _panel(ax, models, x_of, label: str) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter  # matplotlib loads only to plot

    points = {m.name: (x_of(m), _quality(m)) for m in models if x_of(m) is not None}
    front = pareto_front(points)
    for i, model in enumerate(models):
        if model.name in points:
            x, y = points[model.name]
            ax.scatter(
                x,
                y,
                s=46,
                marker=MARKERS[i % len(MARKERS)],
                color=f"C{i % 10}",
                label=model.name + (" *" if model.name in front else ""),
                zorder=3,
            )
    ax.plot(
        [points[n][0] for n in front], [points[n][1] for n in front], "--", color="0.4", zorder=2
    )
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain if _decades(points) < 1 else NullFormatter())
    ax.set_xlabel(label)
    ax.set_ylabel("macro-F1")
    ax.grid(True, alpha=0.3)


MODEL_HEAD = [
    "model",
    "kind",
    "size MB",
    "zip MB",
    "batch",
    "seq",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "seq/s",
    "x baseline",
    "GMAC/s",
    "% INT8 peak",
    "accuracy",
    "macro-F1",
    "ECE",
]
TRAFFIC_HEAD = ["model", "batch", "texts", "mean tokens", "seq/s end to end", "x padded"]
PAIRED_HEAD = [
    "model",
    "accuracy - baseline (95% CI)",
    "macro-F1 - baseline (95% CI)",
    "McNemar p",
    "only baseline right",
    "only model right",
]
STAGE_HEAD = [
    "stage",
    "step",
    "accuracy",
    "macro-F1",
    "accuracy - teacher (95% CI)",
    "macro-F1 - teacher (95% CI)",
    "parameters",
    "size MB",
    "wall s",
]


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def model_rows(report: BenchReport) -> list[list[str]]:
    """One row per model and (batch, seq): the table both Markdown and HTML show."""
    peak = report.machine.int8_peak_gmacs
    rows = []
    for model in report.models:
        acc = model.accuracy
        for lat in model.latency:
            rows.append(
                [
                    model.name,
                    model.kind,
                    f"{model.size_bytes / 1e6:.1f}",
                    f"{(model.zipped_bytes or 0) / 1e6:.1f}",
                    str(lat.batch_size),
                    str(lat.seq_length),
                    f"{lat.p50_ms:.2f}",
                    f"{lat.p90_ms:.2f}",
                    f"{lat.p99_ms:.2f}",
                    f"{lat.throughput_seq_per_s:.1f}",
                    _fmt(lat.ratio_to_baseline_p50, ".2f"),
                    _fmt(lat.gmacs_per_s, ".0f"),
                    _fmt(lat.gmacs_per_s and peak and 100 * lat.gmacs_per_s / peak, ".0f"),
                    _fmt(acc and acc.accuracy, ".4f"),
                    _fmt(acc and acc.macro_f1, ".4f"),
                    _fmt(acc and acc.ece, ".3f"),
                ]
            )
    return rows


def traffic_rows(report: BenchReport) -> list[list[str]]:
    return [
        [
            m.name,
            str(t.batch_size),
            str(t.texts),
            f"{t.mean_tokens:.1f}",
            f"{t.seq_per_s:.1f}",
            _fmt(t.ratio_to_padded, ".2f"),
        ]
        for m in report.models
        if (t := m.traffic) is not None
    ]


def interval_text(diff: float, bounds: list[float], unit: str = "") -> str:
    """A paired difference and its 95% interval, in points: "-2.6 (95% CI -4.2 to -1.0)"."""
    return f"{100 * diff:+.1f}{unit} (95% CI {100 * bounds[0]:+.1f} to {100 * bounds[1]:+.1f})"


def paired_rows(report: BenchReport) -> list[list[str]]:
    """Each model against the baseline on the same rows, in points (bench.paired)."""
    return [
        [
            m.name,
            interval_text(p.accuracy_diff, p.accuracy_ci),
            interval_text(p.macro_f1_diff, p.macro_f1_ci),
            f"{p.mcnemar_p:.3g}",
            str(p.only_reference_right),
            str(p.only_model_right),
        ]
        for m in report.models
        if m.accuracy is not None and (p := m.accuracy.vs_baseline) is not None
    ]


def stage_rows(report: BenchReport) -> list[list[str]]:
    """The accuracy ledger: every step of the run, and every file, against the teacher."""
    return [
        [
            row.stage,
            row.step or "",
            _fmt(row.accuracy, ".4f"),
            _fmt(row.macro_f1, ".4f"),
            (p := row.vs_teacher) and interval_text(p.accuracy_diff, p.accuracy_ci) or "",
            p and interval_text(p.macro_f1_diff, p.macro_f1_ci) or "",
            _fmt(row.parameters, ","),
            _fmt(row.size_bytes and row.size_bytes / 1e6, ".1f"),
            _fmt(row.wall_seconds, ".0f"),
        ]
        for row in report.stages
    ]


def _machine_line(report: BenchReport) -> str:
    m = report.machine
    line = (
        f"{m.cpu_model or m.machine}, {m.cpu_count} cores, {m.threads} threads, "
        f"flags {', '.join(m.cpu_flags) or 'none'}, onnxruntime {m.onnxruntime}"
    )
    if m.int8_peak_gmacs:
        line += f"; INT8 peak estimate {m.int8_peak_gmacs:.0f} GMAC/s ({m.int8_peak_basis})"
    if m.int8_fit:
        line += f"; INT8: {m.int8_fit}"
    return line


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---" if i == 0 or head[i] == "kind" else "---:" for i in range(len(head))]
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown(report: BenchReport) -> str:
    lines = [
        headline(report),
        "",
        "Machine: "
        + _machine_line(report)
        + (" (emulated: timings are not hardware figures)" if report.machine.emulated else ""),
        "",
        *_md_table(MODEL_HEAD, model_rows(report)),
    ]
    traffic = traffic_rows(report)
    if traffic:
        lines += [
            "",
            "Real traffic (tokenization included, length-bucketed dynamic padding):",
            "",
            *_md_table(TRAFFIC_HEAD, traffic),
        ]
    paired = paired_rows(report)
    if paired:
        lines += [
            "",
            f"Against the baseline ({report.baseline}) on the same rows, in points: paired "
            "bootstrap 95% intervals and McNemar's exact test:",
            "",
            *_md_table(PAIRED_HEAD, paired),
        ]
    if report.stages:
        lines += ["", *_md_table(STAGE_HEAD, stage_rows(report))]
    return "\n".join(lines) + "\n"


def _html_table(table_id: str, head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return (
        f'<table id="{table_id}"><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{cells}</table>'
    )


def html_page(report: BenchReport) -> str:
    png = pareto_png(report)
    image = (
        f'<img id="pareto" alt="accuracy against batch-1 latency, batch-32 latency and size" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}">'
        if png
        else "<p>(no accuracy data: no plot)</p>"
    )
    m = report.machine
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgebert benchmark</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%;height:auto}}</style>
</head><body>
<h1>edgebert benchmark</h1>
<p id="headline"><b>{html.escape(headline(report))}</b></p>
<p>{html.escape(_machine_line(report) + ", " + report.created)}
{"<b>emulated: timings are not hardware figures</b>" if m.emulated else ""}</p>
{image}
<h2>Models</h2>
{_html_table("models", MODEL_HEAD, model_rows(report))}
<h2>Against the baseline</h2>
<p>Each model minus {html.escape(report.baseline or "the baseline")} on the same rows, in points:
paired bootstrap 95% intervals (2,000 seeded resamples) and McNemar's exact test. An interval
that contains 0 is no difference.</p>
{_html_table("paired", PAIRED_HEAD, paired_rows(report))}
<h2>Real traffic</h2>
<p>Every evaluation text end to end, tokenization included, length-bucketed dynamic padding.</p>
{_html_table("traffic", TRAFFIC_HEAD, traffic_rows(report))}
<h2>Stages</h2>
<p>The accuracy ledger of the run that made these files: each stage's model, each epoch of its
training stages (before and after pruning, with fake-quant INT8) and each file benchmarked
here, against the run's teacher on the same rows (paired bootstrap, 95% CI).</p>
{_html_table("stages", STAGE_HEAD, stage_rows(report))}
</body></html>
"""


def write_reports(report: BenchReport, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and report.html in `out_dir`; returns their paths."""
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    write_bytes_atomic(paths["json"], (report.model_dump_json(indent=2) + "\n").encode())
    write_bytes_atomic(paths["markdown"], markdown(report).encode())
    write_bytes_atomic(paths["html"], html_page(report).encode())
    return paths

"""Benchmark reports: JSON (machine-readable), Markdown (for READMEs) and one self-contained
HTML page with the latency-vs-accuracy Pareto plot embedded."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from bench.files import write_bytes_atomic
from bench.schema import BenchReport

SCHEMA_FILE = Path(__file__).parent / "report.schema.json"


def report_json_schema() -> dict:
    return BenchReport.model_json_schema()


def _headline(model) -> tuple[float, float | None]:
    """(p50 ms at the smallest batch and shortest timed sequence, macro-F1 or None)."""
    first = min(model.latency, key=lambda l: (l.batch_size, l.seq_length))
    return first.p50_ms, model.accuracy.macro_f1 if model.accuracy else None


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


def pareto_png(report: BenchReport) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = {
        m.name: (lat, f1) for m in report.models for lat, f1 in [_headline(m)] if f1 is not None
    }
    if not points:
        return None
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, (lat, f1) in points.items():
        ax.scatter(lat, f1, s=40, color="tab:blue" if name in front else "tab:gray", zorder=3)
        ax.annotate(name, (lat, f1), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.plot(
        [points[n][0] for n in front],
        [points[n][1] for n in front],
        "--",
        color="tab:blue",
        label="Pareto front",
    )
    first = report.models[0].latency[0]
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency, ms (batch {first.batch_size}, seq {first.seq_length}, log scale)")
    ax.set_ylabel("macro-F1")
    ax.set_title("Latency vs accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


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
]
TRAFFIC_HEAD = ["model", "batch", "texts", "mean tokens", "seq/s end to end", "x padded"]
STAGE_HEAD = ["stage", "accuracy", "macro-F1", "parameters", "size MB", "wall s"]


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


def stage_rows(report: BenchReport) -> list[list[str]]:
    return [
        [
            row.stage,
            _fmt(row.accuracy, ".4f"),
            _fmt(row.macro_f1, ".4f"),
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
        f'<img alt="latency vs accuracy Pareto plot" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}">'
        if png
        else "<p>(no accuracy data: no plot)</p>"
    )
    m = report.machine
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgebert benchmark</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>edgebert benchmark</h1>
<p>{html.escape(_machine_line(report) + ", " + report.created)}
{"<b>emulated: timings are not hardware figures</b>" if m.emulated else ""}</p>
{image}
<h2>Models</h2>
{_html_table("models", MODEL_HEAD, model_rows(report))}
<h2>Real traffic</h2>
<p>Every evaluation text end to end, tokenization included, length-bucketed dynamic padding.</p>
{_html_table("traffic", TRAFFIC_HEAD, traffic_rows(report))}
<h2>Stages</h2>
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

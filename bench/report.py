"""Benchmark reports: JSON (machine-readable), Markdown (for READMEs) and one self-contained
HTML page with the latency-vs-accuracy Pareto plot embedded."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from pathlib import Path

from bench.schema import BenchReport

SCHEMA_FILE = Path(__file__).parent / "report.schema.json"


def report_json_schema() -> dict:
    return BenchReport.model_json_schema()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


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
            for other, (l2, a2) in points.items() if other != name
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
    ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "--", color="tab:blue",
            label="Pareto front")
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


def markdown(report: BenchReport) -> str:
    m = report.machine
    lines = [
        f"Machine: {m.cpu_model or m.machine}, {m.cpu_count} cores, {m.threads} threads, "
        f"flags {', '.join(m.cpu_flags) or 'none'}, onnxruntime {m.onnxruntime}"
        + (" (emulated: timings are not hardware figures)" if m.emulated else ""),
        "",
        "| model | kind | size MB | zip MB | batch | seq | p50 ms | p90 ms | p99 ms | seq/s | x baseline | accuracy | macro-F1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in report.models:
        acc = model.accuracy
        for lat in model.latency:
            ratio = f"{lat.ratio_to_baseline_p50:.2f}" if lat.ratio_to_baseline_p50 else ""
            lines.append(
                f"| {model.name} | {model.kind} | {model.size_bytes / 1e6:.1f} | "
                f"{(model.zipped_bytes or 0) / 1e6:.1f} | {lat.batch_size} | {lat.seq_length} | "
                f"{lat.p50_ms:.2f} | {lat.p90_ms:.2f} | {lat.p99_ms:.2f} | "
                f"{lat.throughput_seq_per_s:.1f} | {ratio} | "
                f"{f'{acc.accuracy:.4f}' if acc else ''} | {f'{acc.macro_f1:.4f}' if acc else ''} |"
            )
    if report.stages:
        lines += ["", "| stage | accuracy | macro-F1 | parameters | size MB | wall s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in report.stages:
            fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
            lines.append(
                f"| {row.stage} | {fmt(row.accuracy, '.4f')} | {fmt(row.macro_f1, '.4f')} | "
                f"{fmt(row.parameters, ',')} | {fmt(row.size_bytes and row.size_bytes / 1e6, '.1f')} | "
                f"{fmt(row.wall_seconds, '.0f')} |"
            )
    return "\n".join(lines) + "\n"


def html_page(report: BenchReport) -> str:
    png = pareto_png(report)
    image = (
        f'<img alt="latency vs accuracy Pareto plot" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}">' if png else "<p>(no accuracy data: no plot)</p>"
    )
    rows = []
    for model in report.models:
        for lat in model.latency:
            acc = model.accuracy
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in [
                    model.name, model.kind, f"{model.size_bytes / 1e6:.1f}", lat.batch_size,
                    lat.seq_length, f"{lat.p50_ms:.2f}", f"{lat.p90_ms:.2f}", f"{lat.p99_ms:.2f}",
                    f"{lat.throughput_seq_per_s:.1f}",
                    f"{lat.ratio_to_baseline_p50:.2f}" if lat.ratio_to_baseline_p50 else "",
                    f"{acc.accuracy:.4f}" if acc else "", f"{acc.macro_f1:.4f}" if acc else "",
                ]) + "</tr>"
            )
    stage_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in [
            s.stage, s.accuracy and f"{s.accuracy:.4f}", s.macro_f1 and f"{s.macro_f1:.4f}",
            s.parameters, s.size_bytes and f"{s.size_bytes / 1e6:.1f}", s.wall_seconds,
        ]) + "</tr>"
        for s in report.stages
    )
    m = report.machine
    head = ["model", "kind", "size MB", "batch", "seq", "p50 ms", "p90 ms", "p99 ms", "seq/s",
            "x baseline", "accuracy", "macro-F1"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgebert benchmark</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>edgebert benchmark</h1>
<p>{html.escape(f"{m.cpu_model or m.machine}, {m.cpu_count} cores, {m.threads} threads, flags {', '.join(m.cpu_flags) or 'none'}, onnxruntime {m.onnxruntime}, {report.created}")}
{'<b>emulated: timings are not hardware figures</b>' if m.emulated else ''}</p>
{image}
<h2>Models</h2>
<table id="models"><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>
<h2>Stages</h2>
<table id="stages"><tr><th>stage</th><th>accuracy</th><th>macro-F1</th><th>parameters</th><th>size MB</th><th>wall s</th></tr>{stage_rows}</table>
</body></html>
"""


def write_reports(report: BenchReport, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and report.html in `out_dir`; returns their paths."""
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    _atomic_write(paths["json"], (report.model_dump_json(indent=2) + "\n").encode())
    _atomic_write(paths["markdown"], markdown(report).encode())
    _atomic_write(paths["html"], html_page(report).encode())
    return paths


def write_schema_file(path: Path = SCHEMA_FILE) -> Path:
    _atomic_write(path, (json.dumps(report_json_schema(), indent=2) + "\n").encode())
    return path

"""The closing summary of a run with a bench stage: what was made, how fast, how accurate,
which file to ship and what to try next. Printed at the end of `edgebert run` and kept as
`summary.txt` in the run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.report import batch_range, interval_text, p50_at
from bench.schema import BenchReport, ModelResult

# The file to ship: the fastest within this many accuracy points of the most accurate file.
SHIP_WITHIN_POINTS = 1.0
BUDGET_POINTS = (1.0, 2.0, 5.0)  # the budgets the summary names a fastest file for


@dataclass
class Reference:
    """The teacher's own score on the bench split (PyTorch, from its training stage)."""

    name: str
    accuracy: float | None
    macro_f1: float | None


def _speed(model: ModelResult, peer: ModelResult | None, batch: int) -> str:
    mine = p50_at(model, batch)
    if mine is None:
        return "-"
    theirs = p50_at(peer, batch) if peer is not None else None
    return f"{mine:.2f}" + (f" ({theirs / mine:.1f}x)" if theirs else "")


def _points(value: float | None, reference: float | None) -> str:
    if value is None:
        return "-"
    if reference is None:
        return f"{value:.4f}"
    return f"{value:.4f} ({100 * (value - reference):+.1f})"


def _fastest(models: list[ModelResult]) -> ModelResult | None:
    """The model with the lowest p50 at its smallest timed shape (batch 1 in every recipe)."""
    return min(models, key=lambda m: min(lat.p50_ms for lat in m.latency), default=None)


def choose_file(shipped: list[ModelResult]) -> ModelResult | None:
    """The fastest file (batch-1 p50) within SHIP_WITHIN_POINTS of the most accurate one."""
    scored = [m for m in shipped if m.accuracy is not None and m.latency]
    if not scored:
        return None
    best = max(m.accuracy.accuracy for m in scored)  # type: ignore[union-attr]
    close = [m for m in scored if 100 * (best - m.accuracy.accuracy) <= SHIP_WITHIN_POINTS]  # type: ignore[union-attr]
    return _fastest(close)


def fastest_within(
    shipped: list[ModelResult], reference: float, metric: str, points: float
) -> ModelResult | None:
    """The fastest file whose `metric` is at most `points` under the teacher's."""
    return _fastest(
        [
            m
            for m in shipped
            if m.accuracy is not None
            and m.latency
            and 100 * (reference - getattr(m.accuracy, metric)) <= points
        ]
    )


def _budget_lines(shipped: list[ModelResult], teacher: Reference) -> list[str]:
    """The speed each accuracy budget buys: the fastest file within 1, 2 and 5 points."""
    lines = []
    for metric, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        reference = getattr(teacher, metric)
        if reference is None:
            continue
        picks = [fastest_within(shipped, reference, metric, p) for p in BUDGET_POINTS]
        text = "; ".join(f"{p:g}: {m.name if m else 'none'}" for p, m in zip(BUDGET_POINTS, picks))
        lines.append(f"fastest within N {label} points of the teacher: {text}")
    return lines


def run_summary(
    report: BenchReport, shipped: set[str], teacher: Reference, report_html: Path
) -> str:
    """Plain text (it goes to logs too): one row per shipped file, then the peer and teacher."""
    small, large = batch_range(report)
    shown = [small] if small == large else [small, large]
    peer = next((m for m in report.models if m.name == report.baseline), None)
    files = [m for m in report.models if m.path in shipped]
    head = ["file", "MB", *(f"b{b} ms (x peer)" for b in shown)]
    head += ["accuracy (vs teacher)", "macro-F1 (vs teacher)"]
    rows = [head] + [_row(m, peer, shown, teacher) for m in files]
    if peer is not None:
        rows.append(_row(peer, peer, shown, teacher, label=f"peer: {peer.name}"))
    teacher_row = [f"teacher: {teacher.name} (PyTorch fp32)", "", *("" for _ in shown)]
    rows.append(teacher_row + [_points(teacher.accuracy, None), _points(teacher.macro_f1, None)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in rows
    ]
    chosen = choose_file(files)
    lines += ["", *_budget_lines(files, teacher), f"report: {report_html}"]
    if chosen is not None:
        lines += [
            f"ship:   {chosen.path}",
            f"        (the fastest file within {SHIP_WITHIN_POINTS:.0f} accuracy point of the "
            "most accurate one)",
            *_against_peer(chosen, peer),
            f'next:   edgebert predict {chosen.path} "a gripping, funny and moving film"',
            f"        edgebert serve {chosen.path}",
        ]
    return "\n".join(lines)


def _against_peer(model: ModelResult, peer: ModelResult | None) -> list[str]:
    """The paired comparison with the peer on the same rows (bench.paired), in points."""
    paired = model.accuracy.vs_baseline if model.accuracy else None
    if paired is None or peer is None:
        return []
    accuracy = interval_text(paired.accuracy_diff, paired.accuracy_ci, " points")
    return [
        f"        vs the peer on the same rows: accuracy {accuracy}, "
        f"McNemar p {paired.mcnemar_p:.2g}"
    ]


def _row(
    model: ModelResult, peer, batches: list[int], teacher: Reference, label: str | None = None
) -> list[str]:
    acc = model.accuracy
    return [
        label or model.name,
        f"{model.size_bytes / 1e6:.1f}",
        *(_speed(model, peer, batch) for batch in batches),
        _points(acc.accuracy if acc else None, teacher.accuracy),
        _points(acc.macro_f1 if acc else None, teacher.macro_f1),
    ]

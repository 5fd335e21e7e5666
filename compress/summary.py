"""The closing summary of a run with a bench stage: what was made, how fast, how accurate,
which file to ship and what to try next. Printed at the end of `edgebert run` and kept as
`summary.txt` in the run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.schema import BenchReport, ModelResult

SHIP_WITHIN_POINTS = (
    1.0  # the file to ship: the fastest within this many accuracy points of the best
)


@dataclass
class Reference:
    """The teacher's own score on the bench split (PyTorch, from its training stage)."""

    name: str
    accuracy: float | None
    macro_f1: float | None


def _p50(model: ModelResult, batch: int) -> float | None:
    rows = [lat for lat in model.latency if lat.batch_size == batch]
    return min(rows, key=lambda lat: lat.seq_length).p50_ms if rows else None


def _speed(model: ModelResult, peer: ModelResult | None, batch: int) -> str:
    mine = _p50(model, batch)
    if mine is None:
        return "-"
    theirs = _p50(peer, batch) if peer is not None else None
    return f"{mine:.2f}" + (f" ({theirs / mine:.1f}x)" if theirs else "")


def _points(value: float | None, reference: float | None) -> str:
    if value is None:
        return "-"
    if reference is None:
        return f"{value:.4f}"
    return f"{value:.4f} ({100 * (value - reference):+.1f})"


def choose_file(shipped: list[ModelResult]) -> ModelResult | None:
    """The fastest file (batch-1 p50) within SHIP_WITHIN_POINTS of the most accurate one."""
    scored = [m for m in shipped if m.accuracy is not None and m.latency]
    if not scored:
        return None
    best = max(m.accuracy.accuracy for m in scored)  # type: ignore[union-attr]
    close = [m for m in scored if 100 * (best - m.accuracy.accuracy) <= SHIP_WITHIN_POINTS]  # type: ignore[union-attr]
    return min(close, key=lambda m: min(lat.p50_ms for lat in m.latency))


def run_summary(
    report: BenchReport, shipped: set[str], teacher: Reference, report_html: Path
) -> str:
    """Plain text (it goes to logs too): one row per shipped file, then the peer and teacher."""
    batches = sorted({lat.batch_size for m in report.models for lat in m.latency})
    small, large = batches[0], batches[-1]
    peer = next((m for m in report.models if m.name == report.baseline), None)
    files = [m for m in report.models if m.path in shipped]
    head = [
        "file",
        "MB",
        f"b{small} ms (x peer)",
        f"b{large} ms (x peer)",
        "accuracy (vs teacher)",
        "macro-F1 (vs teacher)",
    ]
    rows = [head] + [_row(m, peer, small, large, teacher) for m in files]
    if peer is not None:
        rows.append(_row(peer, peer, small, large, teacher, label=f"peer: {peer.name}"))
    rows.append(
        [
            f"teacher: {teacher.name} (PyTorch fp32)",
            "",
            "",
            "",
            _points(teacher.accuracy, None),
            _points(teacher.macro_f1, None),
        ]
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in rows
    ]
    chosen = choose_file(files)
    lines += ["", f"report: {report_html}"]
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
    low, high = paired.accuracy_ci
    return [
        f"        vs the peer on the same rows: accuracy {100 * paired.accuracy_diff:+.1f} points "
        f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}), McNemar p {paired.mcnemar_p:.2g}"
    ]


def _row(
    model: ModelResult, peer, small: int, large: int, teacher: Reference, label: str | None = None
) -> list[str]:
    acc = model.accuracy
    return [
        label or model.name,
        f"{model.size_bytes / 1e6:.1f}",
        _speed(model, peer, small),
        _speed(model, peer, large),
        _points(acc.accuracy if acc else None, teacher.accuracy),
        _points(acc.macro_f1 if acc else None, teacher.macro_f1),
    ]

"""The budget search's rule: which trials keep the target, which one is chosen, what bound
stopped a faster one, and which screened shapes go on to full training."""

from __future__ import annotations


def promising(rows: list[dict], max_drop: float, keep: int) -> list[dict]:
    """The `keep` screened shapes with the best objective among those within `max_drop`; if
    fewer are, the most accurate of the rest fill the places."""
    done = [r for r in rows if "score" in r]
    within = sorted((r for r in done if r["drop"] <= max_drop), key=lambda r: r["objective"])
    rest = sorted((r for r in done if r["drop"] > max_drop), key=lambda r: r["drop"])
    unique = {tuple(sorted(r["params"].items())): r["params"] for r in reversed(within + rest)}
    ordered = [
        unique[key]
        for key in dict.fromkeys(tuple(sorted(r["params"].items())) for r in within + rest)
    ]
    return ordered[:keep]


def rejection(row: dict, target) -> str | None:
    """Which of the target's bounds a trial breaks (the first), or None."""
    if "score" not in row:
        return "failed"
    if row["drop"] > target.max_drop:
        return "max_drop"
    if target.max_latency_ms is not None and row[f"b{target.latency_batch}_ms"] > (
        target.max_latency_ms
    ):
        return "max_latency_ms"
    if target.max_size_mb is not None and row["size_mb"] > target.max_size_mb:
        return "max_size_mb"
    return None


def choose(rows: list[dict], target) -> dict | None:
    """The full-rung trial with the best objective that keeps every bound."""
    kept = [r for r in rows if rejection(r, target) is None]
    return min(kept, key=lambda r: r["objective"]) if kept else None


def binding(rows: list[dict], chosen: dict | None, target) -> str:
    """What stopped a faster file: the bounds broken by the trials better than the chosen one
    (screened shapes that never reached the full rung included; one within max_drop that was
    not among the kept is stopped by `screen.keep`)."""
    if chosen is None and not any("score" in r for r in rows if r.get("rung") != "screen"):
        return "every full trial failed (see their errors)"
    best = chosen["objective"] if chosen else float("inf")
    broke = set()
    for row in rows:
        if "score" not in row or row["objective"] >= best or row.get("promoted"):
            continue
        reason = rejection(row, target)
        broke.add(reason or ("screen.keep" if row.get("rung") == "screen" else None))
    broke.discard(None)
    if broke:
        return ", ".join(sorted(broke))
    return "none: the fastest shape tried keeps the budget (widen the space)"

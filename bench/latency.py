"""Latency statistics and the interleaved timing loop.

Models are timed round-robin (one call each per round) so that a noisy 2-vCPU VM slows all of
them alike and the ratios between them stay honest. p99 on such machines is noise-dominated:
compare p50s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 (linear interpolation), mean, stdev and the 95% t-interval of the mean."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples")
    mean = float(values.mean())
    stdev = float(values.std(ddof=1)) if values.size > 1 else 0.0
    half = (
        float(stats.t.ppf(0.975, values.size - 1) * stdev / math.sqrt(values.size))
        if values.size > 1
        else 0.0
    )
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "n": int(values.size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "stdev_ms": stdev,
        "ci95_low_ms": mean - half,
        "ci95_high_ms": mean + half,
        "min_ms": float(values.min()),
    }


def interleaved_timings(
    calls: dict[str, Callable[[], object]],
    warmup: int = 3,
    min_runs: int = 10,
    min_seconds: float = 2.0,
    max_runs: int = 1000,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Call every function once per round until each has `min_runs` samples and the rounds
    took `min_seconds` per model; return milliseconds per call, per name."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    started = time.perf_counter()
    rounds = 0
    while rounds < max_runs:
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - t0) * 1000.0)
        rounds += 1
        if on_round:
            on_round(rounds)
        elapsed = time.perf_counter() - started
        if rounds >= min_runs and elapsed >= min_seconds * len(calls):
            break
    return samples

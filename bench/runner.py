"""`edgebert bench`: time and score several models side by side, through one code path."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime
import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from bench.classic import fit_classic
from bench.errors import BenchError
from bench.latency import interleaved_timings, latency_stats
from bench.machine import int8_fit, int8_peak_gmacs, machine_info
from bench.macs import graph_macs
from bench.metrics import classification_metrics, expected_calibration_error, token_metrics
from bench.options import DEFAULTS, BenchOptions
from bench.paired import paired_difference
from bench.probabilities import prediction_profile
from bench.progress import ProgressLine, to_stderr_unless_terminal
from bench.runtime import (
    BENCH_DEFAULTS,
    ModelRunner,
    RuntimeSettings,
    model_settings,
    open_model,
    read_label_names,
)
from bench.schema import (
    Accuracy,
    BenchReport,
    Latency,
    Machine,
    ModelResult,
    PairedDifference,
    StageRow,
    Traffic,
)


def _texts_for(n: int, pool: Sequence[str]) -> list[str]:
    return [pool[i % len(pool)] for i in range(n)]


def run_benchmark(
    models: dict[str, Path],
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    dataset: str = "texts",
    options: BenchOptions = DEFAULTS,
    *,
    stages: list[dict] | None = None,
    teacher_predictions: Sequence[int] | None = None,
    console: Console | None = None,
    settings: dict[str, RuntimeSettings] | None = None,
    min_runs: int = 10,
    traffic_rounds: int = 3,
    progress_log: Callable[[str], None] = to_stderr_unless_terminal,
    train: tuple[Sequence[str], Sequence[int]] | None = None,
) -> BenchReport:
    """Load every model, score it on (texts, labels), then time all of them interleaved.

    Latency inputs are real texts padded/truncated to each fixed sequence length, so every model
    sees identical feeds. Accuracy uses dynamic padding (what `predict` does). ORT settings come
    from `options.runtime` and `options.runtime_variants` (a variant times one file again under
    another name) unless `settings` gives them per model. "Real traffic" then runs every text end
    to end (tokenize + length-bucketed batches of `traffic_batch_size`), as a server with dynamic
    padding would. `options.classic` baselines are trained on `train` (texts, labels) first and
    timed beside the models. `stages` are the ledger rows of the run that made the files; with
    `teacher_predictions` (that run's teacher on these rows) every model joins the ledger too.
    """
    models = dict(models)
    _check_inputs(models, texts, options)
    if settings is None:
        settings = model_settings(models, options.runtime, options.runtime_variants)
    console = console or Console(stderr=True)
    openers = {name: _opener(path, settings.get(name), options) for name, path in models.items()}
    openers.update(_classic_openers(options, train, models))
    runners, results, predictions = _load_and_score(
        openers, texts, labels, dataset, options, console
    )
    grid = [(b, s) for s in options.seq_lengths for b in options.batch_sizes]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=console,
    ) as progress:
        task = progress.add_task("bench", total=len(grid))
        lines = ProgressLine("[bench] timed", len(grid), progress_log, "shapes")
        for done, (batch_size, seq_length) in enumerate(grid, 1):
            progress.update(task, description=f"batch {batch_size} x seq {seq_length}")
            _time_shape(runners, results, texts, batch_size, seq_length, options, min_runs)
            progress.advance(task)
            lines.update(done, force=True, last=f"batch {batch_size} x seq {seq_length}")
    if options.traffic_batch_size:
        _real_traffic(
            runners, results, texts, options.traffic_batch_size, traffic_rounds, options.seq_lengths
        )
    return BenchReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=_machine(options.threads),
        baseline=options.baseline,
        models=list(results.values()),
        stages=[StageRow(**row) for row in stages or []]
        + _ledger_rows(results, predictions, runners, labels, teacher_predictions),
    )


def _opener(path: Path, chosen: RuntimeSettings | None, options: BenchOptions):
    """A call that loads one model file or folder with its ORT settings."""
    chosen = chosen or BENCH_DEFAULTS
    settings = replace(chosen, threads=chosen.threads or options.threads)
    return lambda: open_model(path, provider=options.provider, settings=settings)


def _classic_openers(options: BenchOptions, train, models: dict) -> dict:
    """Calls that train the classic baselines asked for, named `classic:KIND`."""
    if not options.classic:
        return {}
    if train is None:
        raise BenchError("classic baselines need the training rows (a data set with a train split)")
    first = next(iter(models.values()))
    label_names = read_label_names(first if first.is_dir() else first.parent)
    base = Path(options.model2vec_base) if options.model2vec_base else None
    return {
        f"classic:{kind}": (lambda kind=kind: fit_classic(kind, *train, label_names, base))
        for kind in options.classic
    }


def _check_inputs(models: dict, texts: Sequence[str], options: BenchOptions) -> None:
    if not models:
        raise BenchError("no models to benchmark")
    if not texts:
        raise BenchError("no texts to benchmark on")
    named = [*models, *(f"classic:{kind}" for kind in options.classic)]
    if options.baseline is not None and options.baseline not in named:
        raise BenchError(
            f"baseline '{options.baseline}' is not among the models: {', '.join(named)}"
        )
    if any(b < 1 for b in options.batch_sizes) or any(
        s < 8 or s > 512 for s in options.seq_lengths
    ):
        raise BenchError("batch sizes must be >= 1 and sequence lengths within 8..512")


def _load_and_score(openers: dict, texts, labels, dataset, options, console):
    """Open every model (memory growth measured around each load, a classic model's training
    included) and score it on the rows."""
    process = psutil.Process()
    runners: dict[str, ModelRunner] = {}
    results: dict[str, ModelResult] = {}
    predictions: dict[str, np.ndarray] = {}
    for name, open_runner in openers.items():
        gc.collect()
        before = process.memory_info().rss
        runner = open_runner()
        runner.run(
            runner.encode(
                _texts_for(max(options.batch_sizes), texts), pad_to=max(options.seq_lengths)
            )
        )
        growth = (process.memory_info().rss - before) / 2**20
        runners[name] = runner
        accuracy = None
        if labels is not None:
            accuracy, predictions[name] = _score(runner, texts, labels, dataset)
        results[name] = ModelResult(
            name=name,
            path=str(runner.path),
            kind=runner.kind,
            provider=options.provider,
            size_bytes=runner.size_bytes,
            zipped_bytes=runner.zipped_bytes,
            rss_growth_mb=round(growth, 1),
            latency=[],
            accuracy=accuracy,
            settings=runner.settings.as_dict()
            if runner.kind in ("onnx", "onnx-text", "ort")
            else {"threads": runner.settings.threads},
        )
        console.print(
            f"loaded {name} ({runner.kind}, {runner.size_bytes / 1e6:.1f} MB)", markup=False
        )
    if options.baseline is not None and predictions:
        _compare_with_baseline(results, predictions, labels, runners, options.baseline)
    return runners, results, predictions


def _ledger_rows(results, predictions, runners, labels, teacher) -> list[StageRow]:
    """Each benchmarked file as the ledger's last rows: size and its difference from the
    run's teacher (not from the bench baseline, which may be a peer)."""
    if teacher is None or labels is None or len(teacher) != len(labels):
        return []
    rows = []
    for name, preds in predictions.items():
        if runners[name].token_level:
            continue
        result = results[name]
        classes = len(runners[name].label_names)
        rows.append(
            StageRow(
                stage=name,
                step="file",
                accuracy=result.accuracy.accuracy,
                macro_f1=result.accuracy.macro_f1,
                size_bytes=result.size_bytes,
                vs_teacher=PairedDifference(**paired_difference(labels, teacher, preds, classes)),
            )
        )
    return rows


def _compare_with_baseline(results, predictions, labels, runners, baseline: str) -> None:
    """Label agreement with the baseline, and (sentence labels) the paired difference."""
    reference = predictions[baseline]
    for name, preds in predictions.items():
        accuracy = results[name].accuracy
        accuracy.label_agreement_with_baseline = float((preds == reference).mean())
        if name != baseline and not runners[name].token_level:
            classes = len(runners[name].label_names)
            accuracy.vs_baseline = PairedDifference(
                **paired_difference(labels, reference, preds, classes)
            )


def _score(runner: ModelRunner, texts, labels, dataset: str) -> tuple[Accuracy, np.ndarray]:
    """Accuracy of one model and its predictions (word rows: entity-level metrics)."""
    if runner.token_level:
        tags = runner.word_tags(texts)
        metrics = token_metrics(labels, tags, runner.label_names)
        preds = np.asarray([t for row in tags for t in row])
    else:
        logits = runner.logits(texts)
        preds = logits.argmax(-1)
        metrics = classification_metrics(labels, preds, runner.label_names)
        metrics["ece"] = expected_calibration_error(logits, labels)
        metrics["label_shares"], metrics["confidence_shares"] = prediction_profile(
            logits, runner.label_names
        )
    metrics.pop("n")
    return Accuracy(dataset=dataset, n=len(labels), **metrics), preds


def _time_shape(
    runners, results, texts, batch_size: int, seq_length: int, options: BenchOptions, min_runs: int
) -> None:
    """Time every model on one (batch, sequence) shape, interleaved; add one Latency each."""
    batch_texts = _texts_for(batch_size, texts)
    feeds = {name: r.encode(batch_texts, pad_to=seq_length) for name, r in runners.items()}
    calls = {name: r.bound(feeds[name]) for name, r in runners.items()}
    timings = interleaved_timings(calls, min_runs=min_runs, min_seconds=options.min_seconds)
    for name, runner in runners.items():
        tokenize = []
        for _ in range(5):
            t0 = time.perf_counter()
            runner.encode(batch_texts, pad_to=seq_length)
            tokenize.append((time.perf_counter() - t0) * 1000)
        summary = latency_stats(timings[name])
        macs = _macs(runner, batch_size, seq_length)
        results[name].latency.append(
            Latency(
                batch_size=batch_size,
                seq_length=seq_length,
                **summary,
                throughput_seq_per_s=batch_size * 1000.0 / summary["mean_ms"],
                tokenize_p50_ms=float(np.median(tokenize)),
                macs=macs,
                gmacs_per_s=None if macs is None else macs / summary["p50_ms"] / 1e6,
            )
        )
    if options.baseline is not None:
        base = results[options.baseline].latency[-1].p50_ms
        for result in results.values():
            result.latency[-1].ratio_to_baseline_p50 = base / result.latency[-1].p50_ms


def _machine(threads: int) -> Machine:
    info = machine_info()
    peak = int8_peak_gmacs(info)
    return Machine(
        platform=info["platform"],
        machine=info["machine"],
        cpu_model=info["cpu_model"],
        cpu_count=info["cpu_count"],
        cpu_flags=info["cpu_flags"],
        threads=threads,
        onnxruntime=onnxruntime.__version__,
        emulated=bool(info.get("emulated")),
        int8_peak_gmacs=peak[0] if peak else None,
        int8_peak_basis=peak[1] if peak else None,
        int8_fit=int8_fit(info),
    )


_MACS_CACHE: dict[tuple[str, int, int], int | None] = {}


def _macs(runner: ModelRunner, batch_size: int, seq_length: int) -> int | None:
    """Graph MACs of an .onnx model (None for PyTorch and .ort files, which onnx cannot read)."""
    if runner.kind != "onnx":
        return None
    key = (str(runner.path), batch_size, seq_length)
    if key not in _MACS_CACHE:
        try:
            _MACS_CACHE[key] = graph_macs(runner.path, batch_size, seq_length)
        except (BenchError, ImportError):  # a runtime-only install may lack the onnx package
            _MACS_CACHE[key] = None
    return _MACS_CACHE[key]


def _real_traffic(
    runners: dict[str, ModelRunner],
    results: dict[str, ModelResult],
    texts: Sequence[str],
    batch_size: int,
    rounds: int,
    seq_lengths: Sequence[int],
) -> None:
    """Every text end to end, tokenization included, in length-sorted batches (round robin)."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.logits(texts, batch_size=batch_size)
            seconds[name].append(time.perf_counter() - t0)
    for name, result in results.items():
        lengths = runners[name].token_lengths(texts)
        best = float(np.median(seconds[name]))
        padded = next(
            (
                l.throughput_seq_per_s
                for l in result.latency
                if l.batch_size == batch_size and l.seq_length == max(seq_lengths)
            ),
            None,
        )
        rate = len(texts) / best
        result.traffic = Traffic(
            batch_size=batch_size,
            texts=len(texts),
            seconds=best,
            seq_per_s=rate,
            mean_tokens=float(np.mean(lengths)),
            ratio_to_padded=None if padded is None else rate / padded,
        )

"""The benchmark report's structure. The JSON report is this model dumped; its JSON Schema is
published as `bench/report.schema.json` (kept equal to the model by a test)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_Strict):
    batch_size: int
    seq_length: int
    n: int = Field(description="timed calls")
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    ci95_low_ms: float
    ci95_high_ms: float
    min_ms: float
    throughput_seq_per_s: float = Field(description="batch_size / mean latency")
    tokenize_p50_ms: float = Field(description="tokenizer time for the same batch, not included")
    ratio_to_baseline_p50: float | None = Field(
        None, description="baseline p50 / this p50 (>1 means faster than the baseline)"
    )
    macs: int | None = Field(None, description="multiply-accumulates of one call (ONNX graphs)")
    gmacs_per_s: float | None = Field(None, description="macs / p50: effective compute rate")


class Traffic(_Strict):
    """Real traffic: every evaluation text end to end, tokenization included, batches of
    length-sorted texts padded to their longest (no fixed sequence length)."""

    batch_size: int
    texts: int
    seconds: float = Field(description="median wall time of one pass over all texts")
    seq_per_s: float
    mean_tokens: float = Field(description="mean tokens per text, special tokens included")
    ratio_to_padded: float | None = Field(
        None, description="seq_per_s / throughput at this batch and the longest fixed length"
    )


class PairedDifference(_Strict):
    """This model minus the baseline on the same rows (bench.paired)."""

    resamples: int = Field(description="paired bootstrap resamples (seeded)")
    accuracy_diff: float
    accuracy_ci: list[float] = Field(description="95% paired-bootstrap interval of the difference")
    macro_f1_diff: float
    macro_f1_ci: list[float]
    mcnemar_p: float = Field(description="McNemar's exact two-sided p on the discordant rows")
    only_reference_right: int
    only_model_right: int


class Accuracy(_Strict):
    dataset: str
    n: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    labels: list[str]
    label_agreement_with_baseline: float | None = None
    ece: float | None = Field(
        None, description="expected calibration error, 15 bins of top-class confidence"
    )
    label_shares: dict[str, float] | None = Field(
        None, description="share of rows predicted as each label (a drift reference)"
    )
    confidence_shares: list[float] | None = Field(
        None,
        description="share of rows whose top-class probability falls in each bin, upper edges "
        "0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0 (a drift reference)",
    )
    vs_baseline: PairedDifference | None = Field(
        None, description="difference from the baseline with paired CIs (text classification)"
    )
    entity_precision: float | None = Field(None, description="token classification, micro")
    entity_recall: float | None = None
    entity_f1: float | None = Field(None, description="token classification: seqeval-style F1")


class ModelResult(_Strict):
    name: str
    path: str
    kind: str = Field(description="torch, onnx or ort")
    provider: str
    size_bytes: int
    zipped_bytes: int | None = Field(None, description="size after zip deflate, as shipped")
    rss_growth_mb: float = Field(description="process RSS growth from loading and warming up")
    latency: list[Latency]
    accuracy: Accuracy | None = None
    settings: dict[str, int | bool | str | None] = Field(
        default_factory=dict, description="ONNX Runtime settings it ran with"
    )
    traffic: Traffic | None = None


class StageRow(_Strict):
    """One line of the run's accuracy ledger: a stage's model, one epoch of a training stage,
    or a benchmarked file, each against the run's teacher on the same rows."""

    stage: str
    step: str | None = Field(None, description="which point of the stage (epoch, file, model)")
    accuracy: float | None = None
    macro_f1: float | None = None
    parameters: int | None = None
    size_bytes: int | None = None
    wall_seconds: float | None = None
    vs_teacher: PairedDifference | None = Field(
        None, description="this row minus the run's teacher on the same rows, paired CIs"
    )


class Machine(_Strict):
    platform: str
    machine: str
    cpu_model: str | None
    cpu_count: int | None
    cpu_flags: list[str]
    threads: int
    onnxruntime: str
    emulated: bool = False
    int8_peak_gmacs: float | None = Field(
        None, description="estimated INT8 peak: cores x MACs per cycle x clock (see basis)"
    )
    int8_peak_basis: str | None = None
    int8_fit: str | None = Field(None, description="which INT8 file fits this CPU, and why")


class BenchReport(_Strict):
    schema_version: int = 1
    created: str
    machine: Machine
    baseline: str | None
    models: list[ModelResult]
    stages: list[StageRow] = Field(default_factory=list)

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


class StageRow(_Strict):
    stage: str
    accuracy: float | None = None
    macro_f1: float | None = None
    parameters: int | None = None
    size_bytes: int | None = None
    wall_seconds: float | None = None


class Machine(_Strict):
    platform: str
    machine: str
    cpu_model: str | None
    cpu_count: int | None
    cpu_flags: list[str]
    threads: int
    onnxruntime: str
    emulated: bool = False


class BenchReport(_Strict):
    schema_version: int = 1
    created: str
    machine: Machine
    baseline: str | None
    models: list[ModelResult]
    stages: list[StageRow] = Field(default_factory=list)

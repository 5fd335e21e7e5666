"""Benchmark options: one model, read by `run_benchmark`, `edgebert bench`, `python -m bench`
and the recipe's `bench` stage alike, so each default is declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import BenchError


class BenchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1)
    seq_lengths: list[int] = Field(default_factory=lambda: [128], min_length=1)
    threads: int = Field(2, ge=1, le=256, description="ORT intra-op threads per model")
    provider: str = Field("cpu", description="cpu or cuda (checked when a model opens)")
    baseline: str | None = Field(None, description="entry that ratios are computed against")
    min_seconds: float = Field(2.0, gt=0, description="timed seconds per model and shape")
    runtime: str = Field("", description="ORT settings for every model, e.g. spinning=off")
    runtime_variants: dict[str, str] = Field(
        default_factory=dict,
        description="NAME: 'MODEL:key=value,...' times MODEL again under other ORT settings",
    )
    classic: list[Literal["tfidf_lr", "tfidf_nb", "model2vec", "fasttext"]] = Field(
        default_factory=list,
        description="classic baselines trained on the train split and timed beside the models "
        "(model2vec and fasttext are optional extras: pip install 'edgebert[peers]')",
    )
    model2vec_base: str | None = Field(
        None,
        description="encoder the model2vec row distils its table from: a model directory (in a "
        "recipe also a name or @stage; default: the model its first training stage starts from)",
    )
    traffic_batch_size: int | None = Field(
        32, ge=1, description="batch of the end-to-end real-traffic pass (null: skip)"
    )

    @classmethod
    def parse(cls, **values) -> BenchOptions:
        """Options from command-line values; a bad one is a one-line BenchError naming it."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BenchError(f"{where}: {first['msg']}") from None


DEFAULTS = BenchOptions()


def name_models(specs: list[str]) -> dict[str, Path]:
    """`NAME=PATH` or `PATH` specs -> {name: path}; a model without a name is named after its
    file (or folder). Two models with one name are refused: the second would hide the first."""
    named: dict[str, Path] = {}
    for spec in specs:
        name, _, text = spec.rpartition("=")
        path = Path(text)
        name = name or (path.stem if path.suffix else path.name)
        if name in named:
            raise BenchError(f"two models are named '{name}': use NAME=PATH")
        named[name] = path
    return named

"""The recipe's shared config sections: the leaf every stage, modifier and the recipe build on.

Stages and modifiers import their base sections from here, and `compress.engine.recipe` assembles the
whole Recipe model from the stage catalog; keeping these models in a module that imports no
stage, no training code and no recipe logic is what keeps those imports one-way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bench.cleaning import CLEANERS, LEMMATIZE, lemma_languages
from bench.metrics import METRIC_NAMES
from compress.data.augment import AugmentConfig


def _known_step(step: str) -> str:
    kind, sep, language = step.partition(":")
    if step in CLEANERS or step == LEMMATIZE or (sep and kind == LEMMATIZE and language):
        return step
    names = [f"'{name}'" for name in (*CLEANERS, LEMMATIZE)]  # pydantic's wording for choices
    raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}")


# A step name; `lemmatize` becomes `lemmatize:<data.language>` once the language is known.
CleanStep = Annotated[str, AfterValidator(_known_step)]
MetricName = Literal[METRIC_NAMES]  # type: ignore[valid-type]


class Strict(BaseModel):
    """Base of every recipe section: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EarlyStopping(Strict):
    metric: MetricName = "accuracy"  # type: ignore[valid-type]
    patience: int = Field(2, ge=1, description="epochs without improvement before stopping")


class TrainingConfig(Strict):
    """Optimiser and schedule of one training phase."""

    lr: float = Field(5e-5, gt=0, le=1.0, description="peak learning rate of AdamW")
    batch_size: int = Field(32, ge=1, le=4096)
    eval_batch_size: int = Field(64, ge=1, le=4096)
    epochs: int = Field(3, ge=1, le=1000)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps warming up")
    weight_decay: float = Field(0.01, ge=0, le=1)
    grad_accum: int = Field(1, ge=1, le=1024, description="batches per optimiser step")
    max_grad_norm: float = Field(1.0, gt=0)
    shuffle: bool = Field(True, description="reshuffle training rows every epoch")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    checkpoint_steps: int | None = Field(
        200, ge=1, description="save a resumable checkpoint every N steps (and every epoch)"
    )
    seed: int | None = Field(None, description="defaults to the recipe's seed")
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for training (1 makes CPU runs bit-exact)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when present")
    bf16: bool = Field(False, description="bf16 autocast on CUDA (ignored on CPU)")
    early_stopping: EarlyStopping | None = None
    class_weights: Literal["balanced"] | list[float] | None = Field(
        None,
        description="weight the loss by class: 'balanced' (n / (classes x count), as "
        "scikit-learn) or one weight per label; distillation weights each row the same way",
    )
    balanced_sampling: bool = Field(
        False,
        description="draw training rows with probability inverse to their class's frequency "
        "(with replacement, seeded): every class is seen about equally often",
    )
    tune_thresholds: bool = Field(
        False,
        description="after training, shift the classifier's per-class biases to maximise "
        "validation macro-F1 (prior correction for imbalanced classes; exported with the model)",
    )


class DataConfig(Strict):
    """Where the labelled texts come from and how they are cleaned and tokenized."""

    dataset: str | None = Field(None, description="a staged set by name, e.g. sst2")
    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    score_test: bool = Field(
        True,
        description="each training stage also scores the test split at its end; a budget "
        "search turns this off in its trials, so that only the chosen file, the teacher and "
        "the peer are scored on test, once",
    )
    extra_train: list[Path] = Field(
        default_factory=list,
        description="labelled files appended to the training split (e.g. monitor feedback)",
    )
    labels: list[str] | Path | None = Field(
        None, description="label names in index order, or a labels.json path"
    )
    text_field: str = Field("text", description="the CSV column or JSON key holding the text")
    label_field: str = Field("label", description="the CSV column or JSON key holding the label")
    on_bad_rows: Literal["error", "skip"] = Field(
        "error",
        description="a row with an empty text or an unknown label: stop with its line number "
        "(error), or leave it out and report how many and which (skip)",
    )
    clean: list[CleanStep] = Field(default_factory=list)
    language: str | None = Field(
        None, description="ISO code of the texts' language (for the 'lemmatize' step), e.g. en"
    )
    max_length: int = Field(128, ge=8, le=512)
    max_train_rows: int | None = Field(None, ge=1)
    max_eval_rows: int | None = Field(None, ge=1)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    augment: AugmentConfig | None = Field(
        None, description="perturbed copies of the training rows (delete/swap/synonym/typo)"
    )

    @model_validator(mode="after")
    def _language_of_lemmatize(self) -> DataConfig:
        """`lemmatize` is stored as `lemmatize:<language>`, so the saved model's cleaning
        (edgebert.json) says which dictionary predict and serve must use."""
        steps = []
        for step in self.clean:
            language = step.partition(":")[2] if step != LEMMATIZE else self.language
            if step.startswith(LEMMATIZE) and language not in lemma_languages():
                raise ValueError(
                    "clean: 'lemmatize' needs data.language, one of "
                    + ", ".join(sorted(lemma_languages()))
                    + (f" (got '{language}')" if language else "")
                )
            steps.append(f"{LEMMATIZE}:{language}" if step == LEMMATIZE else step)
        self.clean = steps
        return self

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.dataset is None and self.train is None:
            raise ValueError("give either 'dataset' (a staged set) or 'train' (a file)")
        if self.dataset is not None and self.train is not None:
            raise ValueError("give 'dataset' or 'train', not both")
        return self


class StageConfig(Strict):
    """Fields every stage has; each stage subclasses this with `type: Literal[...]`."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=60,
        description="label for `@name` references and the stage folder; defaults to type",
    )


class ModifierEntry(Strict):
    """One `with:` entry, `{distill: {...}}`: a one-field model named after its modifier.

    The recipe model builder makes one subclass per modifier and sets `modifier_class`, so a
    training stage builds its modifiers from the validated entries without a registry lookup.
    """

    modifier_class: ClassVar[type]

    @property
    def modifier_name(self) -> str:
        return next(iter(type(self).model_fields))

    @property
    def modifier_config(self) -> Any:
        return getattr(self, self.modifier_name)

    def build(self) -> Any:
        return self.modifier_class(self.modifier_config)


# --- search ----------------------------------------------------------------------------------


class Range(Strict):
    low: float
    high: float
    log: bool = Field(False, description="sample on a log scale (learning rates)")
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high <= self.low:
            raise ValueError("high must be above low")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def _as_range(value):
    """Mappings are ranges: validate them here so an error names the range's problem, not a
    mismatch against every member of the union."""
    if isinstance(value, dict):
        try:
            return Range.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where + ': ' if where else ''}{first['msg']}") from None
    return value


Values = Annotated[list[bool | int | float | str] | Range, BeforeValidator(_as_range)]


class SearchConfig(Strict):
    """A recipe's `search:` block (run by `compress.engine.search`)."""

    method: Literal["grid", "random", "tpe"] = "random"
    trials: int = Field(8, ge=1, le=1000, description="trials to run (grid: at most the grid)")
    metric: MetricName = "accuracy"  # type: ignore[valid-type]
    stage: str | None = Field(
        None, description="stage whose validation metric counts (default: last trained)"
    )
    space: dict[str, Values] = Field(
        default_factory=dict,
        description="dotted recipe path -> list of values or {low, high, log} (a target's "
        "shapes are searched beside these)",
    )
    storage: str | None = Field(
        None,
        description="Optuna RDB URL every worker shares, e.g. postgresql://host/db "
        "(default: sqlite file study.db in the search folder)",
    )
    study: str | None = Field(
        None,
        description="study name (default: the recipe's name): runs naming the same "
        "storage and study are workers of one search",
    )
    heartbeat_seconds: int = Field(
        10, ge=1, le=3600, description="a running trial tells the storage it is alive this often"
    )
    grace_seconds: int = Field(
        120,
        ge=2,
        le=86400,
        description="a running trial silent this long lost its worker (kill -9, a lost "
        "machine): it is failed and queued to run again",
    )
    retries: int = Field(
        3,
        ge=0,
        le=100,
        description="times one trial is run again after a crash (a trial stopped with Ctrl-C "
        "or SIGTERM runs again however often it was stopped)",
    )

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> SearchConfig:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError("grace_seconds must be longer than heartbeat_seconds")
        return self

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> SearchConfig:
        for key, values in self.space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"space.{key}: give at least one value")
            if self.method == "grid" and isinstance(values, Range):
                raise ValueError(f"space.{key}: grid search needs a list of values, not a range")
        return self


# --- accuracy budget ---------------------------------------------------------------------------


class ShapeSpace(Strict):
    """The student shapes a `target:` search tries: each trial draws one value of each list and
    writes it into the student stage (`compress.engine.shapes`)."""

    keep_layers: list[list[int]] = Field(
        min_length=1, description="candidate encoder-layer sets the student keeps, e.g. [[0, 2, 4]]"
    )
    prune: list[float] = Field(
        default_factory=lambda: [0.0],
        min_length=1,
        description="fractions of attention heads and FFN neurons removed (0: no pruning)",
    )
    hidden: list[float] | None = Field(
        None,
        min_length=1,
        description="fractions of the hidden width removed (BERT; 0: full width); "
        "unset: the width is not searched",
    )
    min_count: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="vocabulary cut: tokens seen fewer times in training are dropped (0: no cut)",
    )
    qat: list[bool] = Field(
        default_factory=lambda: [True], min_length=1, description="INT8 QAT in the last epoch"
    )

    @field_validator("keep_layers")
    @classmethod
    def _layer_sets(cls, value: list[list[int]]) -> list[list[int]]:
        for layers in value:
            if not layers or sorted(set(layers)) != layers or layers[0] < 0:
                raise ValueError(f"{layers}: give increasing layer numbers from 0, e.g. [0, 2, 4]")
        return value

    @field_validator("prune", "hidden")
    @classmethod
    def _fractions(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not 0 <= v < 1 for v in value):
            raise ValueError("each fraction must be in [0, 1)")
        return value

    def size(self) -> int:
        widths = len(self.hidden or [0.0])
        return (
            len(self.keep_layers) * len(self.prune) * widths * len(self.min_count) * len(self.qat)
        )


class ScreenConfig(Strict):
    """Successive halving in two rungs: every shape trains `epochs` first; the `keep` most
    promising are then trained in full."""

    epochs: int = Field(1, ge=1, description="training epochs of a screening trial")
    max_train_rows: int | None = Field(
        None, ge=1, description="labelled training rows a screening trial reads (default: all)"
    )
    keep: int = Field(3, ge=1, le=100, description="screened shapes trained in full")
    slack: float = Field(
        2.0,
        ge=0,
        le=100,
        description="points beyond max_drop a screened shape may be and still go on (short "
        "training under-rates a shape)",
    )
    qat: bool = Field(
        False,
        description="screening trials train quantization-aware too (off: they train in float "
        "and are timed as their export's INT8; fake quantization costs a CPU step several "
        "times over, and the screen only ranks shapes)",
    )
    transfer: bool = Field(
        False,
        description="screening trials distil over the student's transfer set too (off: on the "
        "labelled rows alone; a transfer set multiplies a trial's steps, and the screen only "
        "ranks shapes)",
    )


Objective = Literal["latency_b1", "latency_b32", "size"]


class TargetConfig(Strict):
    """A recipe's `target:` block: the accuracy budget the student-shape search serves."""

    max_drop: float = Field(
        gt=0, le=100, description="points of search.metric the student may lose against the teacher"
    )
    teacher: str = Field(
        "teacher", description="stage whose model is the reference (it is trained once)"
    )
    student: str = Field("student", description="training stage whose shape is searched")
    objective: Objective = Field(
        "latency_b1", description="what the chosen file is fastest (smallest) in"
    )
    seq_length: int = Field(128, ge=8, le=4096, description="sequence length trials are timed at")
    max_latency_ms: float | None = Field(
        None, gt=0, description="p50 limit at batch `latency_batch` and `seq_length`"
    )
    latency_batch: int = Field(1, ge=1, le=1024, description="batch max_latency_ms applies to")
    max_size_mb: float | None = Field(None, gt=0, description="limit on the shipped file's size")
    shapes: ShapeSpace
    screen: ScreenConfig | None = Field(
        default_factory=ScreenConfig, description="two-rung successive halving (null: one rung)"
    )
    timing_seconds: float = Field(
        1.0, gt=0, le=60, description="timed seconds per file and shape in a trial"
    )

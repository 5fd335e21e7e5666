"""`static`: a static-embedding student (one vector per token, a masked mean, a small head).

Its table starts as model2vec's distillation of `model`'s encoder (the run's fine-tuned teacher,
or a base model), is cut to the task's tokens by `vocab:` like any student's, and is then
trained in the one training loop: hard labels and, through `with: [distill]`, the teacher's soft
labels over the transfer set, with class weights, balanced sampling and tuned thresholds as the
recipe sets them. Only logit distillation applies: the student has no layers or attention maps
to match, and pruning and QAT act on transformer layers (its INT8 comes from `export`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bench.static_model import STATIC_POOLINGS
from compress.engine.config import Strict
from compress.models.static_init import distilled_table, static_student
from compress.stages.finetune import FinetuneStage, TrainingStageConfig

LAYER_TRANSFERS = ("hidden", "attention", "relations")


class StaticTableConfig(Strict):
    dims: int | None = Field(
        256, ge=8, le=4096, description="PCA width of the token vectors (null: the encoder's)"
    )
    sif: float | None = Field(
        1e-4,
        gt=0,
        lt=1,
        description="SIF coefficient: frequent tokens weigh less in the mean (null: all equal)",
    )
    pair_buckets: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="rows of a table for adjacent token pairs, hashed as fastText's word n-grams "
        "and trained from zero, so a negation such as 'not good' gets a vector (0: none)",
    )


class StaticHeadConfig(Strict):
    hidden: int = Field(
        512, ge=0, le=4096, description="width of the head's hidden layer (0: one linear layer)"
    )
    normalize: bool = Field(True, description="unit-length mean before the head, as model2vec")
    pooling: Literal[STATIC_POOLINGS] = Field(  # type: ignore[valid-type]
        "mean",
        description="mean of the token vectors, or mean_max: the mean beside their element-wise "
        "maximum (one strong word is not averaged away in a long text)",
    )


class StaticConfig(TrainingStageConfig):
    type: Literal["static"]
    model: str = Field(
        description="whose encoder model2vec distils the first table from: @stage (e.g. the "
        "fine-tuned teacher), minilm-l6, mpnet-base or a model directory"
    )
    table: StaticTableConfig = Field(default_factory=StaticTableConfig)
    head: StaticHeadConfig = Field(default_factory=StaticHeadConfig)
    max_length: int | None = Field(
        None,
        ge=8,
        le=512,
        description="tokens per text for this student (null: data.max_length); a token costs "
        "it one lookup, so it can read whole reviews where a transformer is cut short (at most "
        "512: a distilling teacher reads the same tokens)",
    )

    @model_validator(mode="after")
    def _logit_distillation_only(self) -> StaticConfig:
        for index, entry in enumerate(self.with_):
            if entry.modifier_name != "distill":
                raise ValueError(
                    f"with[{index}]: a static student takes only 'distill' "
                    f"('{entry.modifier_name}' acts on transformer layers)"
                )
            for part in LAYER_TRANSFERS:
                if getattr(entry.modifier_config, part) is not None:
                    raise ValueError(
                        f"with[{index}].distill.{part}: a static student has no layers to "
                        "match; it distils the teacher's logits only"
                    )
        return self


class StaticStage(FinetuneStage):
    type_name = "static"
    Config = StaticConfig
    tasks = ("text-classification",)  # one vector per text: no per-token logits

    def max_length(self, ctx) -> int:
        return self.config.max_length or ctx.recipe.data.max_length

    def _starting_model(self, ctx):
        table = self.config.table
        ctx.log(f"[{self.name}] distilling a static table from {self.config.model} (model2vec)")
        vectors = distilled_table(self.model_dir, self.tokenizer, table.dims, table.sif)
        return static_student(
            vectors,
            self.tokenizer.pad_token_id,
            ctx.data.label_names,
            self.config.head.hidden,
            self.config.head.normalize,
            self.config.head.pooling,
            table.pair_buckets,
        )

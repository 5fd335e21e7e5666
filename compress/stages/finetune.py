"""`finetune` / `train`: one training run of a classifier, with modifiers acting inside it.

`finetune` is the usual teacher step; `train` is the same loop, named for runs whose `with:`
list (distill, prune, qat) does the real work on a student.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from transformers import set_seed

from bench.heads import POOLINGS, with_pooling
from compress.data.vocab import VocabConfig, prune_vocabulary
from compress.engine.config import MetricName, ModifierEntry, StageConfig, Strict, TrainingConfig
from compress.engine.context import StageScope
from compress.errors import EdgebertError
from compress.models.model_io import load_classifier, load_tokenizer, save_classifier
from compress.models.structure import encoder_layers
from compress.stages.base import Stage
from compress.training.loop import TrainingPhase


def drop_layers(model, keep: list[int], field: str) -> None:
    """Student = teacher with layers dropped: keep the listed encoder layers, in order."""
    layers = encoder_layers(model)
    if sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= len(layers):
        raise EdgebertError(
            f"{field}: expected increasing layer numbers within 0..{len(layers) - 1}, got {keep}"
        )
    model.base_model.encoder.layer = type(layers)(layers[i] for i in keep)
    model.config.num_hidden_layers = len(keep)


class HeadConfig(Strict):
    pooling: Literal[POOLINGS] = Field(  # type: ignore[valid-type]
        "cls",
        description="how the classifier reads the last layer: cls (BERT's [CLS] pooler), "
        "mean or max over the tokens, or cls_mean ([CLS] and mean side by side)",
    )


class TrainingStageConfig(StageConfig):
    """Fields of every stage that runs the training loop (finetune, train, static)."""

    model: str = Field(description="minilm-l6, mpnet-base, a model directory, or @stage")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    vocab: VocabConfig | None = Field(
        None, description="keep only the tokens of the training texts (shrinks the embedding)"
    )
    select_best: MetricName = "accuracy"  # type: ignore[valid-type]
    # Typed by the modifier union when the recipe model is built (compress.engine.recipe).
    with_: list[ModifierEntry] = Field(default_factory=list, alias="with")

    @model_validator(mode="after")
    def _modifier_schedules(self) -> TrainingStageConfig:
        """Each modifier's epoch window must fit the stage's epochs, and each must agree with
        the others beside it: a bad QAT window fails when the recipe is read, before any
        earlier stage has run."""
        companions = {entry.modifier_name: entry.modifier_config for entry in self.with_}
        for index, entry in enumerate(self.with_):
            config = entry.modifier_config
            try:
                if hasattr(config, "check_schedule"):
                    config.check_schedule(self.training.epochs)
                if hasattr(config, "check_companions"):
                    config.check_companions(companions)
            except ValueError as exc:
                raise ValueError(f"with[{index}].{exc}") from None
        return self


class FinetuneConfig(TrainingStageConfig):
    type: Literal["finetune"]
    keep_layers: list[int] | None = Field(
        None, min_length=1, description="keep only these encoder layers (0-based), e.g. [0, 2, 4]"
    )
    head: HeadConfig | None = Field(
        None, description="classifier head (default: the one the starting model was saved with)"
    )


class TrainConfig(FinetuneConfig):
    type: Literal["train"]  # type: ignore[assignment]


class FinetuneStage(Stage):
    type_name = "finetune"
    Config = FinetuneConfig
    trains = True

    def setup(self, ctx) -> None:
        self.model_dir = ctx.resolve_model_ref(self.config.model, f"stages[{self.index}].model")
        self.tokenizer = load_tokenizer(self.model_dir)
        # A fresh classifier head is drawn from the RNG: seed here so a resumed run, which skips
        # the earlier stages, draws the same head as an uninterrupted one.
        set_seed(self._seed(ctx))
        self.model = self._starting_model(ctx)
        self.modifiers = [entry.build() for entry in self.config.with_]
        self.transfer_texts = [t for m in self.modifiers for t in m.transfer_texts(ctx)]
        self.vocab_report = None
        if self.config.vocab is not None:
            corpus = [t if isinstance(t, str) else " ".join(t) for t in ctx.data.train.texts]
            corpus += self.transfer_texts  # the student must spell the transfer rows too
            self.tokenizer, self.vocab_report = prune_vocabulary(
                self.model, self.tokenizer, corpus, self.config.vocab
            )
            added = self.vocab_report["characters_added"]
            ctx.log(
                f"[{self.name}] vocabulary {self.vocab_report['vocab_before']:,} -> "
                f"{self.vocab_report['vocab_after']:,} tokens"
                + (f" ({added:,} characters added)" if added else "")
            )

    def _starting_model(self, ctx):
        """The model training starts from: the named classifier, with the recipe's head and
        layers (a static stage starts from a distilled table instead)."""
        model = load_classifier(self.model_dir, ctx.data.label_names, ctx.recipe.task)
        if self.config.head is not None:
            model = self._with_head(model, self.config.head.pooling)
        if self.config.keep_layers is not None:
            drop_layers(model, self.config.keep_layers, f"stages[{self.index}].keep_layers")
        return model

    def _with_head(self, model, pooling: str):
        try:
            return with_pooling(model, pooling)
        except ValueError as exc:
            raise EdgebertError(f"stages[{self.index}].head.pooling: {exc}") from None

    def max_length(self, ctx) -> int:
        """Tokens per text this stage trains and ships with (its saved model records it)."""
        return ctx.recipe.data.max_length

    def _seed(self, ctx) -> int:
        seed = self.config.training.seed
        return seed if seed is not None else ctx.recipe.seed

    def run(self, ctx) -> dict:
        data, recipe = ctx.data, ctx.recipe
        ctx.log(
            f"[{self.name}] {self.config.model} on {len(data.train)} train / "
            f"{len(data.validation)} validation rows"
            + (f" + {len(self.transfer_texts):,} transfer rows" if self.transfer_texts else "")
            + f", {self.model.num_parameters():,} parameters"
        )
        phase = TrainingPhase(
            model=self.model,
            tokenizer=self.tokenizer,
            train_texts=data.train.texts,
            train_labels=data.train.labels,
            eval_texts=data.validation.texts,
            eval_labels=data.validation.labels,
            label_names=data.label_names,
            training=self.config.training,
            max_length=self.max_length(ctx),
            select_best=self.config.select_best,
            modifiers=self.modifiers,
            task=recipe.task,
            log=ctx.log,
            progress_log=ctx.log_progress,
            seed=self._seed(ctx),
            scope=StageScope(ctx, self.name, self._folder(ctx), self._model_meta(ctx)),
            unlabeled_texts=self.transfer_texts,
        )
        result = phase.fit(self._folder(ctx) / "checkpoint")
        self.model = phase.model
        result["parameters"] = self.model.num_parameters()
        if self.vocab_report is not None:
            result["vocab"] = self.vocab_report
        result["validation"] = phase.evaluate()
        if data.test is not None and ctx.recipe.data.score_test:
            result["test"] = phase.evaluate_texts(data.test.texts, data.test.labels)
        return result

    def _folder(self, ctx) -> Path:
        return ctx.run_dir.stage_dir(self.index, self.name)

    def _model_meta(self, ctx) -> dict:
        """What the saved model's edgebert.json records (QAT's ONNX folder records the same)."""
        return {
            "task": ctx.recipe.task,
            "labels": ctx.data.label_names,
            "clean": list(ctx.recipe.data.clean),
            "max_length": self.max_length(ctx),
            "source_model": self.config.model,
            "stage": self.name,
        }

    def finish(self, ctx) -> None:
        target = self._folder(ctx) / "model"
        save_classifier(self.model, self.tokenizer, target, self._model_meta(ctx))
        ctx.publish_model(self.name, target)
        ctx.log(f"[{self.name}] saved {target}")


class TrainStage(FinetuneStage):
    type_name = "train"
    Config = TrainConfig

"""Pruning modifiers.

`prune_structured` removes whole attention heads and FFN neurons, and optionally hidden width
(`compress.modifiers.prune_hidden`), so the model really shrinks:
- heads go through the model's own `prune_heads`, which records `config.pruned_heads`; a saved
  model therefore reloads (and exports) with plain `from_pretrained` (the per-layer head counts
  live in the config, the single most reported failure of structured pruning);
- FFN neurons go through torch-pruning's dependency graph (intermediate rows and the matching
  output columns together), the same count in every layer, so `config.intermediate_size` stays
  one number that `from_pretrained` understands.
Importance is pluggable (`compress.modifiers.importance`, one small class per criterion, as in
Torch-Pruning): first-order Taylor (|w * dL/dw|, summed over a few training batches) or weight
magnitude. Ratios can be reached one-shot or over several epochs with training in between.

The cut lands at epoch ends (`start_epoch`..`end_epoch`), or, with `cubic`, a little every
`frequency` steps along the cubic curve of gradual pruning (Zhu & Gupta; movement pruning and
oBERT spread their cuts the same way), so distillation repairs each small cut before the next.
`prune_unstructured` (weight sparsity) lives in `compress.modifiers.sparsity`.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from pydantic import Field, model_validator

from compress.engine.config import Strict
from compress.errors import EdgebertError
from compress.models.structure import (
    count_parameters,
    dependency_graph,
    encoder_layers,
    ffn_parts,
    heads_per_layer,
)
from compress.modifiers.base import Modifier
from compress.modifiers.importance import IMPORTANCES, ImportanceName, score_structures
from compress.modifiers.prune_hidden import (
    WidthCut,
    check_prunable_width,
    kept_width,
    shrink_width_to,
)
from compress.modifiers.sparsity import cubic_sparsity


def _original_head_index(model, layer_index: int, current: int) -> int:
    """`prune_heads` takes head numbers of the unpruned layer; map a current index back."""
    pruned = (
        set(model.config.pruned_heads.get(layer_index, [])) if model.config.pruned_heads else set()
    )
    original = [h for h in range(model.config.num_attention_heads) if h not in pruned]
    return original[current]


def prune_heads(model, scores: list[torch.Tensor], remove: int, min_per_layer: int = 1) -> int:
    """Remove the `remove` least important heads across all layers; returns how many went."""
    candidates = []
    for layer_index, layer_scores in enumerate(scores):
        keep_floor = min_per_layer
        order = torch.argsort(layer_scores)
        removable = max(0, len(layer_scores) - keep_floor)
        candidates += [(float(layer_scores[i]), layer_index, int(i)) for i in order[:removable]]
    candidates.sort()
    plan: dict[int, list[int]] = {}
    for _, layer_index, current in candidates[:remove]:
        plan.setdefault(layer_index, []).append(_original_head_index(model, layer_index, current))
    if plan:
        model.prune_heads(plan)
    return sum(len(v) for v in plan.values())


def prune_ffn(model, scores: list[torch.Tensor], remove_per_layer: int) -> None:
    """Remove the same number of least important neurons from every layer's FFN."""
    if remove_per_layer <= 0:
        return
    graph = dependency_graph(model)
    for layer, layer_scores in zip(encoder_layers(model), scores):
        idxs = torch.argsort(layer_scores)[:remove_per_layer].tolist()
        graph.get_pruning_group(
            layer.intermediate.dense, tp.prune_linear_out_channels, idxs=idxs
        ).prune()
    model.config.intermediate_size = encoder_layers(model)[0].intermediate.dense.out_features


def shrink_ffn_to(model, size: int) -> None:
    """Give every FFN `size` neurons (for resuming: weights are loaded right after)."""
    for layer in encoder_layers(model):
        up, down = ffn_parts(layer)
        if up.out_features == size:
            continue
        new_up = torch.nn.Linear(up.in_features, size).to(up.weight.device)
        new_down = torch.nn.Linear(size, down.out_features).to(down.weight.device)
        layer.intermediate.dense, layer.output.dense = new_up, new_down
    model.config.intermediate_size = size


class CubicSchedule(Strict):
    """Step-wise cuts: the share of the final ratios reached at step t follows
    1 - (1 - (t - start) / (end - start))^3, taken every `frequency` steps."""

    start_step: int = Field(0, ge=0, description="first cut after this step")
    end_step: int | None = Field(None, ge=1, description="default: 70% of the training steps")
    frequency: int = Field(50, ge=1, description="steps between cuts")

    @model_validator(mode="after")
    def _order(self) -> CubicSchedule:
        if self.end_step is not None and self.end_step <= self.start_step:
            raise ValueError("end_step must come after start_step")
        return self

    def end(self, total_steps: int) -> int:
        return self.end_step or max(self.start_step + 1, int(0.7 * total_steps))

    def check_steps(self, total_steps: int) -> None:
        """At setup, when the data has fixed the steps: a cut past the last step never lands."""
        if self.end(total_steps) > total_steps:
            raise EdgebertError(
                f"prune_structured.cubic.end_step: {self.end(total_steps)} is after the last "
                f"step ({total_steps})"
            )

    def share(self, step: int, total_steps: int) -> float | None:
        """The share of the final ratios due after `step`, or None when no cut is due."""
        end = self.end(total_steps)
        due = step == end or (self.start_step < step < end and step % self.frequency == 0)
        return cubic_sparsity(step, 0.0, 1.0, self.start_step, end) if due else None


class PruneStructuredConfig(Strict):
    heads: float = Field(0.0, ge=0, lt=1, description="fraction of attention heads removed")
    ffn: float = Field(0.0, ge=0, lt=1, description="fraction of FFN neurons removed")
    hidden: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="fraction of the hidden width removed (BERT; every head narrows with it)",
    )
    importance: ImportanceName = Field(  # type: ignore[valid-type]
        "taylor", description="how a head or neuron is scored: " + ", ".join(IMPORTANCES)
    )
    start_epoch: int = Field(1, ge=1, description="first pruning at the end of this epoch")
    end_epoch: int | None = Field(None, ge=1, description="full ratio at the end of this epoch")
    cubic: CubicSchedule | None = Field(
        None,
        description="cut a little every `frequency` steps on a cubic curve, distillation "
        "repairing each cut, instead of at epoch ends",
    )
    scoring_batches: int = Field(8, ge=1, le=1000)
    min_heads_per_layer: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _epochs(self) -> PruneStructuredConfig:
        if self.end_epoch is not None and self.end_epoch < self.start_epoch:
            raise ValueError("end_epoch must not come before start_epoch")
        epochs_given = self.start_epoch != 1 or self.end_epoch is not None  # 1: the default
        if self.cubic is not None and epochs_given:
            raise ValueError("cubic: give start_epoch/end_epoch or cubic, not both")
        if self.heads == 0 and self.ffn == 0 and self.hidden == 0:
            raise ValueError("nothing to prune: set 'heads', 'ffn' or 'hidden' above 0")
        return self

    def check_companions(self, companions: dict) -> None:
        """Checked when the recipe is read: the other modifiers of the same stage, by name."""
        if self.hidden and getattr(companions.get("distill"), "hidden", None):
            raise ValueError(
                "prune_structured.hidden: distill.hidden projects the student's starting width; "
                "cut the width or distil hidden states, not both"
            )

    def check_schedule(self, epochs: int) -> None:
        """Checked when the recipe is read (`--dry-run` included), not when training starts."""
        if self.cubic is not None:
            return
        end = self.end_epoch or self.start_epoch
        if end > epochs:
            raise ValueError(
                f"prune_structured.end_epoch: {end} is after the last epoch ({epochs})"
            )


class PruneStructured(Modifier):
    type_name = "prune_structured"
    Config = PruneStructuredConfig

    def setup(self, phase) -> None:
        cfg = self.config
        model = phase.model
        layers = encoder_layers(model)
        self.total_heads = model.config.num_attention_heads * len(layers)
        self.original_ffn = ffn_parts(layers[0])[0].out_features
        self.original_width = model.config.hidden_size
        if cfg.hidden:
            check_prunable_width(model)
        if cfg.cubic is not None:
            cfg.cubic.check_steps(phase.total_steps)
        self.before = count_parameters(model)
        self.end = cfg.end_epoch or cfg.start_epoch
        self.events: list[dict] = []
        self.model = model

    def _target(self, epoch: int) -> float:
        cfg = self.config
        if epoch < cfg.start_epoch:
            return 0.0
        return min(1.0, (epoch - cfg.start_epoch + 1) / (self.end - cfg.start_epoch + 1))

    def on_epoch_end(self, phase, metrics) -> None:
        if self.config.cubic is not None:
            return
        fraction = self._target(phase.epoch)
        if fraction == 0.0 or not (self.config.start_epoch <= phase.epoch <= self.end):
            return
        self._cut(phase, fraction)

    def on_step(self, phase) -> None:
        schedule = self.config.cubic
        if schedule is None:
            return
        share = schedule.share(phase.step, phase.total_steps)
        if share is not None and share > self.share_done:
            self._cut(phase, share)

    @property
    def share_done(self) -> float:
        return self.events[-1]["share"] if self.events else 0.0

    def _cut(self, phase, fraction: float) -> None:
        """Cut heads, FFN and width to `fraction` of their final ratios; log what is left. A
        cut that removes nothing (a cubic step whose share rounds to the same shape) leaves the
        optimiser and best-epoch selection alone."""
        importance = IMPORTANCES[self.config.importance]()
        model = phase.model
        parameters_before = count_parameters(model)
        removed, want_ffn = self._cut_heads_and_ffn(phase, importance, fraction)
        if self.config.hidden:
            self._cut_width(phase, importance, fraction)
        parameters = count_parameters(model)
        reshaped = parameters != parameters_before
        if reshaped:
            phase.model_reshaped()
        event = {
            "epoch": phase.epoch,
            "step": phase.step,
            "share": fraction,
            "heads_removed": removed,
            "heads_left": sum(heads_per_layer(model)),
            "ffn_size": want_ffn,
            "hidden_size": model.config.hidden_size,
            "parameters": parameters,
            "reshaped": reshaped,
        }
        self.events.append(event)
        where = f"step {phase.step}" if self.config.cubic else f"epoch {phase.epoch}"
        phase.log(
            f"prune_structured: {where}: {event['heads_left']}/{self.total_heads} heads, "
            f"FFN {want_ffn}/{self.original_ffn}, width {event['hidden_size']}/"
            f"{self.original_width}, {event['parameters']:,} parameters"
        )

    def _cut_heads_and_ffn(self, phase, importance, fraction: float) -> tuple[int, int]:
        """Heads and FFN cut to `fraction` of their ratios; returns (heads removed, FFN size)."""
        cfg = self.config
        model = phase.model
        head_scores, neuron_scores = score_structures(phase, importance, cfg.scoring_batches)
        remaining_heads = sum(len(s) for s in head_scores)
        want_heads = self.total_heads - round(self.total_heads * cfg.heads * fraction)
        removed = prune_heads(
            model, head_scores, remaining_heads - want_heads, cfg.min_heads_per_layer
        )
        current_ffn = ffn_parts(encoder_layers(model)[0])[0].out_features
        want_ffn = self.original_ffn - round(self.original_ffn * cfg.ffn * fraction)
        prune_ffn(model, neuron_scores, current_ffn - want_ffn)
        return removed, want_ffn

    def _cut_width(self, phase, importance, fraction: float) -> None:
        """The width cut to `fraction` of its ratio, scored afresh on the narrowed model."""
        model = phase.model
        keep = kept_width(
            self.original_width, model.config.num_attention_heads, self.config.hidden * fraction
        )
        importance.prepare(phase, self.config.scoring_batches)
        try:
            width = WidthCut(model)
            width.cut(width.scores(importance.group_importance()), keep, importance)
        finally:
            importance.release(phase)

    def finish(self, phase) -> dict:
        model = phase.model
        return {
            "parameters_before": self.before,
            "parameters_after": count_parameters(model),
            "heads_per_layer": heads_per_layer(model),
            "intermediate_size": model.config.intermediate_size,
            "hidden_size": model.config.hidden_size,
            "pruned_heads": {
                str(k): sorted(v) for k, v in (model.config.pruned_heads or {}).items()
            },
            "events": self.events,
        }

    def state_dict(self) -> dict:
        config = self.model.config
        return {
            "events": self.events,
            "pruned_heads": {str(k): sorted(v) for k, v in (config.pruned_heads or {}).items()},
            "ffn_size": config.intermediate_size,
            "hidden_size": config.hidden_size,
        }

    def load_state_dict(self, phase, state: dict) -> None:
        """Reshape a fresh model to the checkpoint's structure before its weights are loaded."""
        self.events = list(state.get("events", []))
        if state.get("pruned_heads"):
            phase.model.prune_heads({int(k): v for k, v in state["pruned_heads"].items()})
        if state.get("ffn_size"):
            shrink_ffn_to(phase.model, state["ffn_size"])
        if state.get("hidden_size"):
            shrink_width_to(phase.model, state["hidden_size"])

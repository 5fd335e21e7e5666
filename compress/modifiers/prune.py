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

`prune_unstructured` is gradual magnitude pruning (Zhu & Gupta cubic schedule), masks applied
after every step so pruned weights never come back within the run, made permanent at finish.
Unstructured sparsity gives size (compressed file) and no speed on ONNX Runtime.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
import torch_pruning as tp
from pydantic import Field, model_validator

from compress.engine.config import Strict
from compress.errors import EdgebertError
from compress.models.structure import (
    count_parameters,
    encoder_layers,
    ffn_parts,
    heads_per_layer,
)
from compress.modifiers.base import Modifier
from compress.modifiers.importance import IMPORTANCES, ImportanceName, score_structures
from compress.modifiers.prune_hidden import (
    check_prunable_width,
    kept_width,
    prune_width,
    shrink_width_to,
    width_scores,
)


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
    device = next(model.parameters()).device
    example = {
        "input_ids": torch.ones((1, 4), dtype=torch.long, device=device),
        "attention_mask": torch.ones((1, 4), dtype=torch.long, device=device),
    }
    was_training = model.training  # tracing the graph switches the model to eval mode
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    for layer, layer_scores in zip(encoder_layers(model), scores):
        idxs = torch.argsort(layer_scores)[:remove_per_layer].tolist()
        graph.get_pruning_group(
            layer.intermediate.dense, tp.prune_linear_out_channels, idxs=idxs
        ).prune()
    model.train(was_training)
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
    scoring_batches: int = Field(8, ge=1, le=1000)
    min_heads_per_layer: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _epochs(self) -> PruneStructuredConfig:
        if self.end_epoch is not None and self.end_epoch < self.start_epoch:
            raise ValueError("end_epoch must not come before start_epoch")
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
        fraction = self._target(phase.epoch)
        if fraction == 0.0 or not (self.config.start_epoch <= phase.epoch <= self.end):
            return
        importance = IMPORTANCES[self.config.importance]()
        removed, want_ffn = self._cut_heads_and_ffn(phase, importance, fraction)
        if self.config.hidden:
            self._cut_width(phase, importance, fraction)
        phase.model_reshaped()
        model = phase.model
        event = {
            "epoch": phase.epoch,
            "heads_removed": removed,
            "heads_left": sum(heads_per_layer(model)),
            "ffn_size": want_ffn,
            "hidden_size": model.config.hidden_size,
            "parameters": count_parameters(model),
        }
        self.events.append(event)
        phase.log(
            f"prune_structured: epoch {phase.epoch}: {event['heads_left']}/{self.total_heads} heads, "
            f"FFN {want_ffn}/{self.original_ffn}, width {event['hidden_size']}/"
            f"{self.original_width}, {event['parameters']:,} parameters"
        )

    def _cut_heads_and_ffn(self, phase, importance, fraction: float) -> tuple[int, int]:
        """This epoch's share of the head and FFN cut; returns (heads removed, FFN size)."""
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
        """This epoch's share of the width cut, scored afresh on the already narrowed model."""
        model = phase.model
        keep = kept_width(
            self.original_width, model.config.num_attention_heads, self.config.hidden * fraction
        )
        importance.prepare(phase, self.config.scoring_batches)
        try:
            scores = width_scores(model, importance.group_importance())
            prune_width(model, scores, keep, importance)
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


class PruneUnstructuredConfig(Strict):
    initial_sparsity: float = Field(0.0, ge=0, lt=1)
    final_sparsity: float = Field(0.5, gt=0, lt=1)
    start_step: int = Field(0, ge=0)
    end_step: int | None = Field(None, ge=1, description="default: 70% of the training steps")
    frequency: int = Field(50, ge=1, description="update masks every N steps")
    scope: Literal["per_layer", "global"] = "per_layer"
    targets: str = Field(
        r"encoder\.layer\.\d+\..*(query|key|value|dense|q|k|v|o)\.weight$",
        description="regex over parameter names",
    )

    @model_validator(mode="after")
    def _order(self) -> PruneUnstructuredConfig:
        if self.final_sparsity < self.initial_sparsity:
            raise ValueError("final_sparsity must be >= initial_sparsity")
        return self


def cubic_sparsity(step: int, initial: float, final: float, start: int, end: int) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3."""
    if step <= start:
        return initial
    if step >= end:
        return final
    progress = (step - start) / (end - start)
    return final + (initial - final) * (1 - progress) ** 3


class PruneUnstructured(Modifier):
    type_name = "prune_unstructured"
    Config = PruneUnstructuredConfig

    @property
    def params(self) -> dict[str, torch.nn.Parameter]:
        """Looked up by name every time: structured pruning and QAT replace modules, and a
        mask must follow the live parameter, not the one that existed at setup."""
        pattern = re.compile(self.config.targets)
        return {name: p for name, p in self.model.named_parameters() if pattern.search(name)}

    def setup(self, phase) -> None:
        cfg = self.config
        self.model = phase.model
        if not self.params:
            raise EdgebertError(f"prune_unstructured.targets: no parameter matches {cfg.targets!r}")
        self.end = cfg.end_step or max(cfg.start_step + 1, int(0.7 * phase.total_steps))
        self.masks: dict[str, torch.Tensor] = {}
        self.sparsity = 0.0
        if cfg.initial_sparsity > 0:
            self._update(cfg.initial_sparsity)

    def _update(self, sparsity: float) -> None:
        self.sparsity = sparsity
        params = self.params
        with torch.no_grad():
            if self.config.scope == "global":
                scores = torch.cat([p.detach().abs().flatten().cpu() for p in params.values()])
                k = int(sparsity * scores.numel())
                threshold = scores.kthvalue(k).values if k > 0 else torch.tensor(-1.0)
                for name, p in params.items():
                    self.masks[name] = p.detach().abs() > threshold.to(p.device)
            else:
                for name, p in params.items():
                    k = int(sparsity * p.numel())
                    if k == 0:
                        self.masks[name] = torch.ones_like(p, dtype=torch.bool)
                        continue
                    threshold = p.detach().abs().flatten().kthvalue(k).values
                    self.masks[name] = p.detach().abs() > threshold
            self._apply()

    def _apply(self) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                mask = self.masks.get(name)
                if mask is None:
                    continue
                if mask.shape != p.shape:  # structured pruning shrank it: recompute this one
                    k = int(self.sparsity * p.numel())
                    threshold = p.detach().abs().flatten().kthvalue(k).values if k else -1.0
                    mask = self.masks[name] = p.detach().abs() > threshold
                p.mul_(mask)

    def on_step(self, phase) -> None:
        cfg = self.config
        step = phase.step
        if cfg.start_step <= step <= self.end and (step % cfg.frequency == 0 or step == self.end):
            self._update(
                cubic_sparsity(
                    step, cfg.initial_sparsity, cfg.final_sparsity, cfg.start_step, self.end
                )
            )
        else:
            self._apply()

    def finish(self, phase) -> dict:
        self.model = phase.model
        self._apply()
        params = self.params
        per_layer = {name: round(float((p == 0).float().mean()), 4) for name, p in params.items()}
        zeros = sum(int((p == 0).sum()) for p in params.values())
        total = sum(p.numel() for p in params.values())
        return {
            "target_sparsity": self.sparsity,
            "achieved_sparsity": round(zeros / total, 4),
            "per_layer": per_layer,
        }

    def state_dict(self) -> dict:
        return {"masks": {k: v.cpu() for k, v in self.masks.items()}, "sparsity": self.sparsity}

    def load_state_dict(self, phase, state: dict) -> None:
        device = next(phase.model.parameters()).device
        self.masks = {k: v.to(device) for k, v in state.get("masks", {}).items()}
        self.sparsity = state.get("sparsity", 0.0)

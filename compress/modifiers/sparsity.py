"""`prune_unstructured`: gradual magnitude pruning (Zhu & Gupta cubic schedule).

Masks are applied after every step so pruned weights never come back within the run, and made
permanent at finish. Unstructured sparsity gives size (a compressed file) and no speed on ONNX
Runtime; `prune_structured` (`compress.modifiers.prune`) is the one that makes a model faster.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from pydantic import Field, model_validator

from compress.engine.config import Strict
from compress.errors import EdgebertError
from compress.modifiers.base import Modifier


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

"""`distill` modifier: a teacher's soft labels (and optionally hidden states, attention
maps and self-attention relations) teach the model being trained.

loss = alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE
       + hidden.weight * MSE(proj(h_s), h_t) + attention.weight * KL(A_t || A_s)
       + relations.weight * sum over Q-Q, K-K, V-V of KL(R_t || R_s)
hidden/attention on a uniform layer map (student layer i <-> teacher layer i * L_t / L_s),
TinyBERT/MiniLM style; relations on one layer pair, MiniLMv2 style (`compress.models.relations`).
Teacher logits are computed once over the training and transfer rows and kept on disk (the
teacher forward pass is then paid once, not every epoch; on a CPU it runs through ONNX Runtime)
unless token-level transfer needs the teacher every step. The teacher may be an assistant
(`@assistant`): a student whose vocabulary was cut from the assistant's reads through a token
map (`compress.data.vocab.token_id_map`), so token-level transfer still lines up.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from bench.errors import BenchError
from bench.files import write_bytes_atomic
from bench.runtime import open_model
from compress.data.splits import encode, make_collate
from compress.data.transfer import TransferConfig, load_transfer_texts
from compress.data.vocab import token_id_map
from compress.engine.config import Strict
from compress.errors import EdgebertError
from compress.models.model_io import classifier_label_count, load_classifier, load_tokenizer
from compress.models.relations import KINDS, layer_relations, relation_kl
from compress.modifiers.base import Modifier
from compress.training.logits_archive import load_logits_archive, save_logits_archive
from compress.training.loop import batched_logits
from export.errors import ExportError
from export.onnx_export import export_onnx


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, times T^2 (Hinton et al.),
    averaged over the batch; `row_weights` (class-weighted KD) weight each row's KL."""
    t = temperature
    per_row = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.softmax(teacher_logits / t, dim=-1),
        reduction="none",
    ).sum(-1)
    if row_weights is not None:
        per_row = per_row * row_weights / row_weights.mean()
    return per_row.mean() * (t * t)


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state indices; 0 is the embedding output on both sides."""
    return [(i, round(i * teacher_layers / student_layers)) for i in range(student_layers + 1)]


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(A_t || A_s) per query row, over real (unpadded) query positions; heads are averaged
    first when the head counts differ."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    eps = 1e-8
    kl = (teacher * ((teacher + eps).log() - (student + eps).log())).sum(-1)  # [B, H, L]
    weights = mask[:, None, :].float().expand_as(kl)
    return (kl * weights).sum() / weights.sum().clamp(min=1)


class HiddenTransfer(Strict):
    weight: float = Field(1.0, gt=0)
    projection: bool = Field(True, description="learn a linear map when widths differ")


class AttentionTransfer(Strict):
    weight: float = Field(1.0, gt=0)


class RelationTransfer(Strict):
    """MiniLMv2 self-attention relations of one layer pair (last layers by default)."""

    weight: float = Field(1.0, gt=0)
    heads: int = Field(
        12, ge=1, le=256, description="relation heads: any count works at any attention-head count"
    )
    student_layer: int = Field(-1, description="encoder layer of the student (-1: the last)")
    teacher_layer: int = Field(-1, description="encoder layer of the teacher (-1: the last)")


class DistillConfig(Strict):
    teacher: str | None = Field(None, description="@stage, a model directory or a model name")
    teacher_logits: Path | None = Field(
        None, description="precomputed teacher logits (.npz with train_logits)"
    )
    temperature: float = Field(2.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft-label term")
    hidden: HiddenTransfer | None = None
    attention: AttentionTransfer | None = None
    relations: RelationTransfer | None = None
    transfer: TransferConfig | None = Field(
        None, description="more rows to distil on: unlabeled files and/or augmented copies"
    )
    cache_logits: bool = Field(True, description="teacher logits computed once, kept on disk")
    teacher_runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="what computes cached teacher logits on a CPU (CUDA: torch)"
    )
    retokenize: bool = Field(False, description="allow a teacher with another tokenizer")

    @property
    def token_level(self) -> bool:
        """Transfer that needs the teacher's per-token states every step."""
        return bool(self.hidden or self.attention or self.relations)

    @model_validator(mode="after")
    def _needs_a_teacher(self) -> DistillConfig:
        if self.teacher is None and self.teacher_logits is None:
            raise ValueError("distill needs 'teacher' (a model or @stage) or 'teacher_logits'")
        if self.teacher is None and self.token_level:
            raise ValueError(
                "hidden/attention/relations transfer needs a 'teacher' model, not only logits"
            )
        return self


class Distill(Modifier):
    type_name = "distill"
    Config = DistillConfig
    transfer_report: dict | None = None  # set by transfer_texts when the recipe has a transfer set

    def transfer_texts(self, ctx) -> list[str]:
        if self.config.transfer is None:
            return []
        texts, self.transfer_report = load_transfer_texts(
            self.config.transfer, ctx.data, list(ctx.recipe.data.clean), ctx.recipe.seed
        )
        return texts

    def setup(self, phase) -> None:
        cfg = self.config
        self.device = next(phase.model.parameters()).device
        self.cached: torch.Tensor | None = None
        self.teacher = None
        self.projections = None
        self.token_map: torch.Tensor | None = None
        self.logits_report: dict = {}
        started = time.perf_counter()
        if cfg.teacher_logits is not None and cfg.teacher is None:
            self.cached = self._load_precomputed(cfg.teacher_logits, phase)
        elif phase.scope is None:
            raise EdgebertError("with.distill: a teacher model needs a recipe run to resolve it")
        else:
            self._setup_teacher(phase.scope.run, phase)
        self.setup_seconds = round(time.perf_counter() - started, 2)
        phase.log(
            f"distill: teacher ready in {self.setup_seconds} s"
            + (" (logits cached)" if self.cached is not None else " (live every step)")
        )

    def _setup_teacher(self, ctx, phase) -> None:
        cfg = self.config
        try:
            teacher_dir = ctx.resolve_model_ref(cfg.teacher)
        except EdgebertError as exc:
            raise EdgebertError(f"distill.teacher: {exc}") from None
        labels = classifier_label_count(teacher_dir)
        if labels != len(phase.label_names):
            raise EdgebertError(
                f"distill.teacher: {teacher_dir} predicts {labels} labels, "
                f"the task has {len(phase.label_names)}"
            )
        teacher_tokenizer = load_tokenizer(teacher_dir)
        same = teacher_tokenizer.get_vocab() == phase.tokenizer.get_vocab()
        if not same and cfg.token_level:
            try:
                self.token_map = token_id_map(phase.tokenizer, teacher_tokenizer).to(self.device)
            except EdgebertError as exc:
                raise EdgebertError(f"distill.teacher: {exc}") from None
        elif not same and not cfg.retokenize:
            raise EdgebertError(
                "distill.retokenize: teacher and student tokenizers differ; set retokenize: "
                "true to tokenize the texts separately for the teacher"
            )
        teacher_ids = (
            phase.train_ids
            if same or self.token_map is not None
            else encode(teacher_tokenizer, phase.train_texts, phase.max_length)[0]
        )
        pad = teacher_tokenizer.pad_token_id or 0
        if cfg.cache_logits and not cfg.token_level:
            self.cached = self._cached_logits(teacher_dir, teacher_ids, pad, phase)
            return
        self.teacher = self._frozen_teacher(teacher_dir)
        self.teacher_ids = teacher_ids
        self.teacher_pad = pad
        self.same_tokenizer = same or self.token_map is not None
        if cfg.token_level:
            self._setup_transfer(phase, self.teacher)

    def _frozen_teacher(self, teacher_dir: Path):
        """The PyTorch teacher, on the student's device, in eval mode and without gradients;
        loaded only where it runs (live every step, or computing the logits on a GPU)."""
        teacher = load_classifier(teacher_dir).to(self.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    def _cached_logits(self, teacher_dir: Path, ids, pad_id: int, phase) -> torch.Tensor:
        """Teacher logits of every training and transfer row, from the cache file keyed by the
        teacher's weights and the token ids it reads (so by text and tokenization)."""
        key = hashlib.sha256()
        for w in sorted(teacher_dir.glob("*.safetensors")):
            key.update(f"{w}:{w.stat().st_size}:{w.stat().st_mtime_ns}".encode())
        key.update(repr(ids).encode())
        digest = key.hexdigest()[:16]
        shared = phase.scope.run.cache_dir  # a search's trials share one teacher's logits
        cache = (shared or phase.scope.folder) / f"teacher_logits-{digest}.safetensors"
        if cache.is_file():
            self.logits_report = {"rows": len(ids), "from_cache": True}
            return load_file(str(cache))["logits"].to(self.device)
        started = time.perf_counter()
        on_cpu = self.device.type == "cpu" and self.config.teacher_runtime == "onnxruntime"
        logits = (
            self._onnx_teacher_logits(teacher_dir, phase, digest)
            if on_cpu
            else batched_logits(
                self._frozen_teacher(teacher_dir),
                ids,
                phase.training.eval_batch_size,
                pad_id,
                phase.progress("teacher logits", len(ids), "rows"),
            )
        )
        seconds = time.perf_counter() - started
        self.logits_report = {
            "rows": len(ids),
            "runtime": "onnxruntime" if on_cpu else f"torch ({self.device.type})",
            "seconds": round(seconds, 2),
            "rows_per_second": round(len(ids) / seconds, 1),
        }
        phase.log(
            f"distill: teacher logits for {len(ids):,} rows through "
            f"{self.logits_report['runtime']}: {self.logits_report['rows_per_second']:,} rows/s"
        )
        tensor = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cache, safetensors_bytes({"logits": tensor}))  # workers share it
        # The same logits in the portable form `teacher_logits` reads: students can then be
        # distilled on another machine without the teacher's weights.
        save_logits_archive(
            phase.scope.folder / "teacher_logits.npz",
            tensor.numpy(),
            phase.train_texts,
            str(teacher_dir),
        )
        return tensor.to(self.device)

    def _onnx_teacher_logits(self, teacher_dir: Path, phase, digest: str) -> np.ndarray:
        """The teacher exported once and run through ONNX Runtime on length-bucketed batches
        (ORT's fused CPU kernels, no autograd machinery): the same texts, the same tokenizer and
        max length as the PyTorch path, logits equal to 1e-4 (test)."""
        folder = phase.scope.folder / f"teacher-onnx-{digest}"
        try:
            onnx_path = folder / "model.onnx"
            if not onnx_path.is_file():
                export_onnx(teacher_dir, folder)
            runner = open_model(onnx_path, threads=torch.get_num_threads())
        except (ExportError, BenchError) as exc:
            raise EdgebertError(f"distill.teacher_runtime: {exc}") from None
        runner.max_length = phase.max_length
        progress = phase.progress("teacher logits", len(phase.train_texts), "rows")
        return runner.logits(phase.train_texts, phase.training.eval_batch_size, progress)

    def _load_precomputed(self, path: Path, phase) -> torch.Tensor:
        logits = load_logits_archive(path, phase.train_texts, len(phase.label_names))
        return torch.from_numpy(logits).to(self.device)

    def _setup_transfer(self, phase, teacher) -> None:
        cfg = self.config
        student_cfg, teacher_cfg = phase.model.config, teacher.config
        self.map = layer_map(student_cfg.num_hidden_layers, teacher_cfg.num_hidden_layers)
        phase.request_outputs(output_hidden_states=bool(cfg.hidden or cfg.relations))
        if cfg.attention:
            phase.request_outputs(output_attentions=True)
            for model in (phase.model, teacher):
                if hasattr(model, "set_attn_implementation"):
                    model.set_attn_implementation("eager")
                else:  # pragma: no cover - older transformers
                    model.config._attn_implementation = "eager"
        if cfg.hidden:
            s_width, t_width = student_cfg.hidden_size, teacher_cfg.hidden_size
            if s_width != t_width and not cfg.hidden.projection:
                raise EdgebertError(
                    f"distill.hidden.projection: student width {s_width} differs from teacher "
                    f"width {t_width}; set projection: true"
                )
            if s_width != t_width:
                self.projections = torch.nn.ModuleList(
                    torch.nn.Linear(s_width, t_width) for _ in self.map
                ).to(self.device)
                phase.add_trained_parameters(self.projections.parameters())

    def loss(self, phase, batch, outputs, loss):
        cfg = self.config
        if self.cached is not None:
            teacher_logits = self.cached[batch["row"].to(self.cached.device)].to(
                outputs.logits.device
            )
            teacher_out = None
        else:
            teacher_out = self._teacher_forward(batch)
            teacher_logits = teacher_out.logits
        total = cfg.alpha * kd_loss(
            outputs.logits.float(),
            teacher_logits.float(),
            cfg.temperature,
            phase.row_weights(batch, teacher_logits.argmax(-1)),
        )
        total = total + (1 - cfg.alpha) * loss
        if teacher_out is not None and cfg.hidden:
            mask = batch["attention_mask"].unsqueeze(-1).float()
            terms = []
            for k, (s_i, t_i) in enumerate(self.map):
                student_h = outputs.hidden_states[s_i]
                if self.projections is not None:
                    student_h = self.projections[k](student_h)
                diff = (student_h - teacher_out.hidden_states[t_i]) ** 2 * mask
                terms.append(diff.sum() / (mask.sum() * student_h.shape[-1]))
            total = total + cfg.hidden.weight * torch.stack(terms).mean()
        if teacher_out is not None and cfg.attention:
            terms = [
                attention_kl(
                    outputs.attentions[s_i - 1],
                    teacher_out.attentions[t_i - 1],
                    batch["attention_mask"],
                )
                for s_i, t_i in self.map[1:]
            ]
            total = total + cfg.attention.weight * torch.stack(terms).mean()
        if teacher_out is not None and cfg.relations:
            total = total + cfg.relations.weight * self._relation_loss(
                phase, batch, outputs, teacher_out
            )
        return total

    def _relation_loss(self, phase, batch, outputs, teacher_out) -> torch.Tensor:
        """Q-Q + K-K + V-V relation KL of the configured layer pair (MiniLMv2)."""
        cfg = self.config.relations
        student = layer_relations(phase.model, outputs.hidden_states, cfg.student_layer)
        with torch.no_grad():
            teacher = layer_relations(self.teacher, teacher_out.hidden_states, cfg.teacher_layer)
        mask = batch["attention_mask"]
        return sum(relation_kl(student[k], teacher[k], mask, cfg.heads) for k in KINDS)

    def _teacher_forward(self, batch):
        cfg = self.config
        with torch.no_grad():
            if self.same_tokenizer:
                ids, mask = batch["input_ids"], batch["attention_mask"]
                if self.token_map is not None:
                    ids = self.token_map[ids]
            else:
                rows = [
                    {"input_ids": self.teacher_ids[i], "labels": 0} for i in batch["row"].tolist()
                ]
                collated = make_collate(self.teacher_pad)(rows)
                ids, mask = (
                    collated["input_ids"].to(self.device),
                    collated["attention_mask"].to(self.device),
                )
            return self.teacher(
                input_ids=ids,
                attention_mask=mask,
                output_hidden_states=bool(cfg.hidden or cfg.relations),
                output_attentions=bool(cfg.attention),
            )

    def finish(self, phase) -> dict:
        self.teacher = None
        self.cached = None
        return {
            "teacher_setup_seconds": self.setup_seconds,
            "teacher_logits": self.logits_report,
            "transfer": self.transfer_report,
            "token_map": self.token_map is not None,
        }

    def state_dict(self) -> dict:
        return (
            {"projections": self.projections.state_dict()} if self.projections is not None else {}
        )

    def load_state_dict(self, phase, state: dict) -> None:
        if self.projections is not None and "projections" in state:
            self.projections.load_state_dict(state["projections"])

"""`qat` modifier: INT8 quantization-aware training, exported as an ONNX QDQ graph that ONNX
Runtime runs on integer kernels (its QDQ fusion turns DQ -> MatMul into MatMulIntegerToFloat).

Linear layers of the encoder get torch.ao FakeQuantize on their input (per-tensor, unsigned
8-bit, the U8S8 form that reaches VNNI) and on their weight (per-channel, symmetric 8-bit).
Observers watch the ranges until `freeze_observers_after` of the QAT steps, then freeze so the
last steps train against fixed scales. At finish the fake-quant model is exported to ONNX, its
ORT labels are checked against the fake-quant PyTorch model, and the wrappers are removed so the
saved float checkpoint loads with plain `from_pretrained`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.ao.quantization import (
    FakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    disable_observer,
)

from bench.metrics import classification_metrics
from bench.model_file import write_model_meta
from bench.runtime import open_model
from compress.engine.config import Strict
from compress.errors import EdgebertError
from compress.modifiers.base import Modifier
from compress.training.loop import batched_logits
from export.parity import compare_logits
from export.qdq import fold_weight_quantization, quantize_embedding_tables

QAT_ONNX = "model_qat_int8.onnx"


class QuantLinear(torch.nn.Module):
    """nn.Linear with fake-quantized input and weight; `exporting` switches to the functional
    ops that the ONNX exporter turns into QuantizeLinear/DequantizeLinear pairs."""

    def __init__(self, linear: torch.nn.Linear, weight_max: int = 127):
        super().__init__()
        # The Linear's own parameters, not a copy and not a child module: names stay
        # `...query.weight`, so the optimiser, pruning masks and checkpoints keep addressing them.
        self.weight = linear.weight
        self.bias = linear.bias
        self.exporting = False
        self.input_fq = FakeQuantize(
            observer=MovingAverageMinMaxObserver,
            quant_min=0,
            quant_max=255,
            dtype=torch.quint8,
            qscheme=torch.per_tensor_affine,
        )
        self.weight_fq = FakeQuantize(
            observer=MovingAveragePerChannelMinMaxObserver,
            quant_min=-weight_max,
            quant_max=weight_max,
            dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric,
            ch_axis=0,
        )
        self.to(linear.weight.device)

    def to_linear(self) -> torch.nn.Linear:
        linear = torch.nn.Linear(
            self.weight.shape[1],
            self.weight.shape[0],
            bias=self.bias is not None,
            device=self.weight.device,
        )
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exporting:
            x = torch.fake_quantize_per_tensor_affine(
                x, float(self.input_fq.scale), int(self.input_fq.zero_point), 0, 255
            )
            # (-128, 127) is the range ONNX accepts; symmetric scales never produce -128.
            w = torch.fake_quantize_per_channel_affine(
                self.weight,
                self.weight_fq.scale,
                self.weight_fq.zero_point.to(torch.int32),
                0,
                -128,
                127,
            )
            return F.linear(x, w, self.bias)
        return F.linear(self.input_fq(x), self.weight_fq(self.weight), self.bias)


def wrap_linears(model: torch.nn.Module, pattern: str, weight_max: int = 127) -> list[QuantLinear]:
    regex = re.compile(pattern)
    wrapped = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, torch.nn.Linear) and regex.search(full):
                quant = QuantLinear(child, weight_max)
                setattr(parent, child_name, quant)
                wrapped.append(quant)
    return wrapped


def unwrap_linears(model: torch.nn.Module) -> None:
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, QuantLinear):
                setattr(parent, child_name, child.to_linear())


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_qat_onnx(model, path: Path, opset: int = 18) -> Path:
    """Export a model holding QuantLinear modules as an ONNX QDQ graph (dynamic axes)."""
    import warnings

    model.eval()
    model.apply(disable_observer)
    quants = [m for m in model.modules() if isinstance(m, QuantLinear)]
    for quant in quants:
        quant.exporting = True
    example = (torch.ones((1, 8), dtype=torch.long), torch.ones((1, 8), dtype=torch.long))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LogitsOnly(model),
                example,
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={
                    "input_ids": {0: "batch_size", 1: "sequence_length"},
                    "attention_mask": {0: "batch_size", 1: "sequence_length"},
                    "logits": {0: "batch_size"},
                },
            )
    finally:
        for quant in quants:
            quant.exporting = False
    tmp.replace(path)
    return path


class QATConfig(Strict):
    start_epoch: int = Field(1, ge=1, description="fake quantization from the start of this epoch")
    freeze_observers_after: float = Field(
        0.8, gt=0, le=1, description="fraction of the QAT steps after which scales stay fixed"
    )
    targets: str = Field(r"encoder\.layer\.\d+\.", description="regex over Linear module names")
    parity_rows: int = Field(512, ge=1, description="validation rows for the ORT-vs-torch check")
    int8_embeddings: bool = Field(
        True, description="store the word embedding as int8 rows (most of a small model's file)"
    )
    calibration_batches: int = Field(
        8, ge=1, le=1000, description="training batches that set the first ranges when QAT starts"
    )
    reduce_range: bool = Field(
        False,
        description="7-bit weights (-63..63): x86 CPUs without VNNI add two u8 x s8 products in "
        "16 bits, which full-range weights can saturate (README 'AVX2-only x86')",
    )

    def check_schedule(self, epochs: int) -> None:
        """Checked when the recipe is read (`--dry-run` included), not when training starts."""
        if self.start_epoch > epochs:
            raise ValueError(
                f"qat.start_epoch: {self.start_epoch} is after the last epoch ({epochs})"
            )


class QAT(Modifier):
    type_name = "qat"
    Config = QATConfig

    def setup(self, phase) -> None:
        cfg = self.config
        steps_before = (cfg.start_epoch - 1) * phase.steps_per_epoch
        qat_steps = max(1, phase.total_steps - steps_before)
        self.freeze_step = steps_before + max(1, int(cfg.freeze_observers_after * qat_steps))
        self.enabled = False
        self.frozen = False
        if cfg.start_epoch == 1:
            self._enable(phase, restart_selection=False)

    def _enable(self, phase, restart_selection: bool = True, calibrate: bool = True) -> None:
        wrapped = wrap_linears(
            phase.model, self.config.targets, 63 if self.config.reduce_range else 127
        )
        if not wrapped:
            raise EdgebertError(f"qat.targets: no Linear layer matches {self.config.targets!r}")
        if calibrate:
            self._calibrate(phase)
        self.enabled = True
        if restart_selection:  # earlier epochs ended with a float model: no QAT candidates
            phase.model_changed()
        phase.log(f"qat: fake quantization on {len(wrapped)} Linear layers")

    def _calibrate(self, phase) -> None:
        """Observe a few training batches (eval mode: no dropout, no RNG) so every scale is set
        before the first fake-quantized forward pass."""
        model = phase.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for batch in phase.leading_batches(self.config.calibration_batches):
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        model.train(was_training)

    def on_epoch_end(self, phase, metrics) -> None:
        if not self.enabled and phase.epoch + 1 == self.config.start_epoch:
            self._enable(phase)

    def on_step(self, phase) -> None:
        if self.enabled and not self.frozen and phase.step >= self.freeze_step:
            phase.model.apply(disable_observer)
            self.frozen = True
            phase.log(f"qat: observers frozen at step {phase.step}")

    def finish(self, phase) -> dict:
        if not self.enabled:
            return {"enabled": False}
        model = phase.model
        model.apply(disable_observer)
        if phase.scope is None:
            raise EdgebertError("with.qat: needs a recipe run (a stage folder for its ONNX file)")
        out_dir = phase.scope.folder / "qat"
        out_dir.mkdir(parents=True, exist_ok=True)
        fake_quant_logits = batched_logits(
            model, phase.eval_ids, phase.training.eval_batch_size, phase.pad_id
        )
        fake_quant = classification_metrics(
            phase.eval_labels, fake_quant_logits.argmax(-1), phase.label_names
        )
        onnx_path = export_qat_onnx(model, out_dir / QAT_ONNX)
        folded = fold_weight_quantization(onnx_path)
        tables = quantize_embedding_tables(onnx_path) if self.config.int8_embeddings else 0
        phase.tokenizer.save_pretrained(str(out_dir))
        unwrap_linears(model)
        model.config.save_pretrained(str(out_dir))
        write_model_meta(out_dir, {**phase.scope.model_meta, "quantization": "qat"})
        rows = min(self.config.parity_rows, len(phase.eval_texts))
        parity = compare_logits(
            fake_quant_logits[:rows], open_model(onnx_path).logits(phase.eval_texts[:rows])
        )
        phase.scope.publish_file("qat_int8", onnx_path)
        phase.log(
            f"qat: exported {onnx_path.name}; fake-quant accuracy {fake_quant['accuracy']:.4f}, "
            f"macro_f1 {fake_quant['macro_f1']:.4f}; ORT {parity.summary()}"
        )
        return {
            "enabled": True,
            "onnx": str(onnx_path),
            "onnx_bytes": onnx_path.stat().st_size,
            "int8_weight_tensors": folded,
            "int8_embedding_tables": tables,
            "freeze_step": self.freeze_step,
            "fake_quant_validation": {k: fake_quant[k] for k in ("accuracy", "macro_f1")},
            "ort_label_agreement_with_fake_quant": parity.label_agreement,
            "ort_parity_with_fake_quant": parity.as_dict(),
        }

    def state_dict(self) -> dict:
        return {"enabled": self.enabled, "frozen": self.frozen}

    def load_state_dict(self, phase, state: dict) -> None:
        """Re-wrap before the checkpoint's weights (and observer buffers) are loaded."""
        if state.get("enabled") and not self.enabled:  # ranges come from the checkpoint
            self._enable(phase, restart_selection=False, calibrate=False)
        if state.get("frozen"):
            phase.model.apply(disable_observer)
            self.frozen = True

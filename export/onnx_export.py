"""PyTorch classifier directory -> ONNX (opset pinned, dynamic batch and sequence axes).

Optimum's exporter does the tracing (TorchScript-based, the reliable path for BERT today), so the
output folder loads as-is with `optimum.onnxruntime.ORTModelForSequenceClassification`. ORT's
transformer optimizer then fuses attention, LayerNorm and GELU into a second file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from bench.files import first_line, replace_file
from bench.model_kind import is_static, is_token_classifier
from export.errors import ExportError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OPSET = 18
SIDE_FILES = ("edgebert.json",)


def check_classifier_dir(model_dir: Path) -> dict:
    """Refuse what is not a saved sequence classifier, before any slow work."""
    if not model_dir.is_dir():
        raise ExportError(f"model directory not found: {model_dir}")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{model_dir}: no config.json")
    if not any(model_dir.glob("*.safetensors")):
        raise ExportError(f"{model_dir}: no .safetensors weights (pickled weights are refused)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{config_path}: unreadable ({exc})") from None
    architectures = config.get("architectures") or []
    if not any(
        a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in architectures
    ):
        raise ExportError(
            f"{model_dir}: not a sequence or token classifier (architectures: "
            f"{architectures or 'none'})"
        )
    return config


def export_task(config: dict) -> str:
    """Optimum's task name for a saved classifier's config."""
    return "token-classification" if is_token_classifier(config) else "text-classification"


def export_onnx(model_dir: Path, out_dir: Path, opset: int = OPSET) -> Path:
    """Export to `out_dir/model.onnx` with tokenizer and config beside it; returns the path."""
    config = check_classifier_dir(model_dir)
    task = export_task(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".export-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("optimum").setLevel(logging.ERROR)
            if is_static(config):
                _static_export(model_dir, tmp, opset)
            else:
                _optimum_export(model_dir, tmp, task, opset)
        for name in SIDE_FILES:
            if (model_dir / name).is_file():
                shutil.copy(model_dir / name, tmp / name)
        for item in tmp.iterdir():
            replace_file(item, out_dir / item.name)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{model_dir}: ONNX export failed ({first_line(exc)})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "model.onnx"


def _optimum_export(model_dir: Path, output: Path, task: str, opset: int) -> None:
    """Optimum's exporter. A pooling head (bench.heads) is loaded here and traced with Optimum's
    own BERT ONNX config: `main_export` would rebuild BERT's [CLS] head from the config."""
    from optimum.exporters.onnx import export, main_export
    from optimum.exporters.tasks import TasksManager
    from optimum.utils.save_utils import maybe_save_preprocessors

    from bench.heads import PooledBertForSequenceClassification, declared_pooling

    if declared_pooling(model_dir) == "cls":
        main_export(
            str(model_dir),
            output=str(output),
            task=task,
            opset=opset,
            do_validation=False,
            device="cpu",
        )
        return
    model = PooledBertForSequenceClassification.from_pretrained(
        str(model_dir), use_safetensors=True
    ).eval()
    onnx_config = TasksManager.get_exporter_config_constructor(
        "onnx", model_type="bert", task=task, library_name="transformers"
    )(model.config, task=task)
    export(model, onnx_config, output / "model.onnx", opset=opset)
    model.config.save_pretrained(str(output))
    maybe_save_preprocessors(model_dir, output)


def _static_export(model_dir: Path, output: Path, opset: int) -> None:
    """A static-embedding classifier has no Optimum config: torch's exporter traces its four
    ops (Gather, masked mean, normalise, head) with the same input and output names as
    Optimum's BERT files, so every runtime feeds it the same way."""
    import torch
    from optimum.utils.save_utils import maybe_save_preprocessors

    from bench.static_model import StaticEmbeddingForSequenceClassification

    model = StaticEmbeddingForSequenceClassification.from_pretrained(
        str(model_dir), use_safetensors=True
    ).eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    axes = {0: "batch_size", 1: "sequence_length"}

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    torch.onnx.export(
        LogitsOnly(),
        (ids, torch.ones_like(ids)),
        str(output / "model.onnx"),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch_size"}},
        opset_version=opset,
        dynamo=False,
    )
    model.config.save_pretrained(str(output))
    maybe_save_preprocessors(model_dir, output)


def optimize_onnx(onnx_path: Path, out_path: Path, model_type: str = "bert") -> Path:
    """ORT transformer optimizer: fused attention / LayerNorm / GELU, saved as a new file.

    MPNet's relative position bias defeats the attention fusion; the file is still valid, just
    less fused (measured in bench, not assumed).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
        optimized = optimize_model(
            str(onnx_path),
            model_type=model_type,
            num_heads=0,
            hidden_size=0,
            opt_level=1,
            use_gpu=False,
            only_onnxruntime=False,
        )
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    optimized.save_model_to_file(str(tmp))
    replace_file(tmp, out_path)
    return out_path


def fused_op_counts(onnx_path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph has (tests and reports read fusions here)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts

"""One way to run a classifier, whatever its format: ONNX, ORT mobile (.ort) or PyTorch dir.

Parity checks, benchmarks and serving all need "texts in, logits out" with identical
tokenization; this is the single place that does it. A model's folder holds its tokenizer, its
`config.json` (label names) and `edgebert.json` (max length), as `export` writes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.errors import BenchError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def model_kind(path: Path) -> str:
    if path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return "torch"
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if path.is_file() and path.suffix == ".ort":
        return "ort"
    if path.is_dir() and (path / "model.onnx").is_file():
        return "onnx"
    raise BenchError(
        f"{path}: not a model (expected a .onnx or .ort file, or a directory with "
        "config.json and safetensors weights)"
    )


def read_label_names(folder: Path) -> list[str]:
    config = folder / "config.json"
    try:
        id2label = json.loads(config.read_text(encoding="utf-8"))["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]
    except (OSError, KeyError, ValueError) as exc:
        raise BenchError(f"{config}: cannot read label names ({exc})") from None


def read_max_length(folder: Path, default: int = 128) -> int:
    meta = folder / "edgebert.json"
    if meta.is_file():
        try:
            return int(json.loads(meta.read_text(encoding="utf-8")).get("max_length", default))
        except (ValueError, OSError):
            return default
    return default


@dataclass
class ModelRunner:
    """A loaded classifier: `encode` texts to arrays, `run` arrays to logits."""

    path: Path
    kind: str
    tokenizer: Any
    label_names: list[str]
    max_length: int
    session: Any = None
    torch_model: Any = None
    input_names: list[str] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.glob("*.safetensors"))

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Tokenize a batch; `pad_to` pads to a fixed length (benchmarks), else to the longest."""
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=pad_to or self.max_length,
            padding="max_length" if pad_to else "longest",
            return_tensors="np",
        )
        feeds = {name: encoded[name].astype(np.int64) for name in self.input_names if name in encoded}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.session is not None:
            return self.session.run(["logits"], feeds)[0]
        import torch

        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
            return self.torch_model(**tensors).logits.float().numpy()

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Logits for many texts, batched by length (little padding), in input order."""
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.run(self.encode([texts[i] for i in chunk]))
        return out


def session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def open_model(path: Path | str, threads: int | None = None, provider: str = "cpu") -> ModelRunner:
    """Load any supported model format with its tokenizer and label names."""
    path = Path(path)
    if not path.exists():
        raise BenchError(f"model not found: {path}")
    if provider not in PROVIDERS:
        raise BenchError(f"unknown provider '{provider}': use one of {', '.join(PROVIDERS)}")
    kind = model_kind(path)
    if kind == "onnx" and path.is_dir():
        path = path / "model.onnx"
    folder = path if path.is_dir() else path.parent
    runner = ModelRunner(
        path=path, kind=kind, tokenizer=None, label_names=[], max_length=read_max_length(folder)
    )
    if kind == "torch":
        import torch
        from safetensors import SafetensorError
        from transformers import AutoModelForSequenceClassification

        if threads:
            torch.set_num_threads(threads)
        try:
            runner.torch_model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), use_safetensors=True
            ).eval()
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            raise BenchError(f"{folder}: cannot load model ({_short(exc)})") from None
        runner.input_names = ["input_ids", "attention_mask"]
    else:
        runner.session, runner.input_names = _onnx_session(path, threads, provider)
    runner.label_names = read_label_names(folder)
    runner.tokenizer = _tokenizer(folder)
    return runner


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{folder}: no usable tokenizer beside the model ({_short(exc)})") from None


def _onnx_session(path: Path, threads: int | None, provider: str):
    import onnxruntime as ort

    wanted = PROVIDERS[provider]
    if wanted not in ort.get_available_providers():
        raise BenchError(f"provider '{provider}' is not available in this onnxruntime build")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=[wanted]
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise BenchError(f"{path}: cannot load ({_short(exc)})") from None
    input_names = [i.name for i in session.get_inputs()]
    if "input_ids" not in input_names or "logits" not in [o.name for o in session.get_outputs()]:
        raise BenchError(
            f"{path}: expected inputs input_ids/attention_mask and output logits, got {input_names}"
        )
    return session, input_names

"""A Triton Inference Server model repository for an exported classifier.

Why three models: Triton's ONNX Runtime backend runs the graph and batches requests, but
it takes token ids; a Python-backend model tokenizes, and an ensemble joins the two, so a
client sends text and gets logits (and, through Triton's classification extension, labels):

    DIR/<name>/             ensemble: TEXT (string) -> LOGITS (fp32, one per label)
    DIR/<name>_tokenizer/   Python backend: the model's own tokenizer.json, its cleaning steps
                            and max length from edgebert.json; pads to max length, so every
                            request has one shape and the dynamic batcher can join them
    DIR/<name>_onnx/        ONNX Runtime backend: the shipped .onnx, dynamic batching with the
                            preferred batch sizes of the bench, labels.txt for class_count
    DIR/README.md           the docker command that serves it

The configs are plain protobuf text (`config.pbtxt`); the tests parse each one into Triton's
own `ModelConfig` message (tritonclient) and check it against the ONNX graph, as a server would.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from pathlib import Path

import onnx

from bench import cleaning
from bench.files import write_text_atomic
from bench.model_file import read_classifier_meta, write_model_meta
from bench.tokenizer import FastTokenizer
from export.errors import ExportError

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
ONNX_TYPES = {onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.FLOAT: "TYPE_FP32"}
DEFAULT_PREFERRED = (8, 32)
# What the tokenizer model imports, pinned to the versions edgebert is tested with.
SERVER_PACKAGES = " ".join(
    f"{name}=={importlib.metadata.version(name)}" for name in ("tokenizers", "simplemma")
)

MODEL_PY = '''"""Triton Python backend: text -> token ids, as edgebert tokenizes (written by edgebert)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

OUTPUTS = {outputs!r}


def _cleaner(folder, steps):
    """edgebert's own cleaning steps, from the copy of bench/cleaning.py beside this file."""
    spec = importlib.util.spec_from_file_location("edgebert_cleaning", folder / "cleaning.py")
    cleaning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cleaning)
    return cleaning.make_cleaner(steps)


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(__file__).parent
        meta = json.loads((folder / "edgebert.json").read_text(encoding="utf-8"))
        self.clean = _cleaner(folder, meta["clean"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation({max_length})
        self.tokenizer.enable_padding(pad_id={pad_id}, pad_token={pad_token!r}, length={max_length})

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts = [self.clean(t.decode("utf-8") if isinstance(t, bytes) else str(t)) for t in raw]
            encodings = self.tokenizer.encode_batch(texts)
            tensors = [
                pb_utils.Tensor(name, np.asarray([getattr(e, field) for e in encodings], np.int64))
                for name, field in OUTPUTS.items()
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''

FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def _graph_io(onnx_path: Path) -> tuple[list[tuple[str, str]], tuple[str, str, int]]:
    """([(input name, Triton type)], (output name, Triton type, labels)) of a classifier graph."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inputs = [(i.name, ONNX_TYPES.get(i.type.tensor_type.elem_type, "?")) for i in graph.input]
    unknown = [name for name, _ in inputs if name not in FIELDS]
    if unknown:
        raise ExportError(f"{onnx_path}: inputs {unknown} are not token ids a tokenizer makes")
    out = graph.output[0]
    dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
    return inputs, (out.name, ONNX_TYPES.get(out.type.tensor_type.elem_type, "?"), dims[-1])


def _tensor(name: str, dtype: str, dims: list[int], extra: str = "") -> str:
    return f'  {{ name: "{name}" data_type: {dtype} dims: {dims}{extra} }}'


def _onnx_config(name, inputs, output, max_length, max_batch, preferred) -> str:
    out_name, out_type, labels = output
    tensors_in = ",\n".join(_tensor(n, t, [max_length]) for n, t in inputs)
    tensor_out = _tensor(out_name, out_type, [labels], ' label_filename: "labels.txt"')
    return f"""name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [
{tensors_in}
]
output [
{tensor_out}
]
dynamic_batching {{
  preferred_batch_size: {list(preferred)}
  max_queue_delay_microseconds: 5000
}}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def _text_in(name: str, kind: str, max_batch: int) -> str:
    """The head both text-taking models share: name, backend or platform, the TEXT input."""
    return f"""name: "{name}"
{kind}
max_batch_size: {max_batch}
input [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [1] }}
]
"""


def _tokenizer_config(name, inputs, max_length, max_batch) -> str:
    outputs = ",\n".join(_tensor(n, "TYPE_INT64", [max_length]) for n, _ in inputs)
    return (
        _text_in(name, 'backend: "python"', max_batch)
        + f"""output [
{outputs}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""
    )


def _ensemble_config(name, tokenizer, model, inputs, output, max_batch) -> str:
    out_name, out_type, labels = output
    step_map = ",\n".join(f'        {{ key: "{n}" value: "{n}" }}' for n, _ in inputs)
    return (
        _text_in(name, 'platform: "ensemble"', max_batch)
        + f"""output [
  {{ name: "LOGITS" data_type: {out_type} dims: [{labels}] label_filename: "labels.txt" }}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{tokenizer}"
      model_version: -1
      input_map {{ key: "TEXT" value: "TEXT" }}
      output_map [
{step_map}
      ]
    }},
    {{
      model_name: "{model}"
      model_version: -1
      input_map [
{step_map}
      ]
      output_map {{ key: "{out_name}" value: "LOGITS" }}
    }}
  ]
}}
"""
    )


def preferred_batch_sizes(report: Path | None) -> tuple[int, ...]:
    """Batch sizes above 1 that a bench report timed (the sizes the bench found worth
    measuring for throughput), else 8 and 32."""
    if report is None:
        return DEFAULT_PREFERRED
    try:
        text = report.read_text(encoding="utf-8")
        json.loads(text)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{report}: not a readable bench report ({exc})") from None
    sizes = sorted({int(s) for s in re.findall(r'"batch_size":\s*(\d+)', text) if int(s) > 1})
    return tuple(sizes) or DEFAULT_PREFERRED


def write_triton_repository(
    onnx_path: Path,
    out_dir: Path,
    name: str = "classifier",
    preferred: tuple[int, ...] = DEFAULT_PREFERRED,
) -> Path:
    """Write the repository for `onnx_path` (its tokenizer and edgebert.json beside it)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ExportError(f"--triton-name: '{name}' must be letters, digits, '_' or '-'")
    if not onnx_path.is_file():
        raise ExportError(f"model not found: {onnx_path}")
    folder = onnx_path.parent
    meta = read_classifier_meta(folder)
    if not (folder / "tokenizer.json").is_file() or not meta.get("labels"):
        raise ExportError(
            f"{onnx_path}: a Triton repository needs tokenizer.json and the label names "
            "(edgebert.json or config.json) beside the .onnx file"
        )
    inputs, output = _graph_io(onnx_path)
    if output[2] != len(meta["labels"]):
        raise ExportError(f"{onnx_path}: {output[2]} logits for {len(meta['labels'])} labels")
    max_length = int(meta["max_length"])
    max_batch = max(preferred)
    tokenizer, model = f"{name}_tokenizer", f"{name}_onnx"
    pad_id, pad_token = _pad(folder)
    files = {
        f"{model}/config.pbtxt": _onnx_config(
            model, inputs, output, max_length, max_batch, preferred
        ),
        f"{model}/labels.txt": "\n".join(meta["labels"]) + "\n",
        f"{name}/labels.txt": "\n".join(meta["labels"]) + "\n",
        f"{tokenizer}/config.pbtxt": _tokenizer_config(tokenizer, inputs, max_length, max_batch),
        f"{tokenizer}/1/model.py": MODEL_PY.format(
            outputs={n: FIELDS[n] for n, _ in inputs},
            max_length=max_length,
            pad_id=pad_id,
            pad_token=pad_token,
        ),
        f"{name}/config.pbtxt": _ensemble_config(name, tokenizer, model, inputs, output, max_batch),
        "README.md": _readme(name, out_dir),
    }
    for relative, text in files.items():
        write_text_atomic(out_dir / relative, text)
    (out_dir / name / "1").mkdir(exist_ok=True)  # Triton wants a version folder, even empty
    (out_dir / model / "1").mkdir(exist_ok=True)
    shutil.copy(onnx_path, out_dir / model / "1" / "model.onnx")
    shutil.copy(folder / "tokenizer.json", out_dir / tokenizer / "1" / "tokenizer.json")
    shutil.copy(cleaning.__file__, out_dir / tokenizer / "1" / "cleaning.py")  # no edgebert needed
    write_model_meta(out_dir / tokenizer / "1", meta)
    return out_dir


def _pad(folder: Path) -> tuple[int, str]:
    """The tokenizer's pad token and id (as bench's tokenizer pads)."""
    tokenizer = FastTokenizer(folder)
    return tokenizer.pad_id, tokenizer.pad_token or "[PAD]"


def _readme(name: str, out_dir: Path) -> str:
    return f"""# Triton model repository (written by `edgebert export`)

Serve it (CPU; add `--gpus all` on a GPU machine, not tested here):

    docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
      -v {out_dir.resolve()}:/models {TRITON_IMAGE} \\
      bash -c "pip install {SERVER_PACKAGES} && tritonserver --model-repository=/models"

The tokenizer model needs nothing of edgebert: its cleaning steps are the copy of edgebert's
`cleaning.py` in `{name}_tokenizer/1/`, which needs only `simplemma` (for `lemmatize`).

Ask it, with labels through the classification extension:

    import numpy as np, tritonclient.http as http
    client = http.InferenceServerClient("localhost:8000")
    text = http.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([["the flight was late again"]], dtype=object))
    out = http.InferRequestedOutput("LOGITS", class_count=1)
    print(client.infer("{name}", [text], outputs=[out]).as_numpy("LOGITS"))
"""

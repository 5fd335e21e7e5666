"""One way to run a classifier, whatever its format: ONNX, ORT mobile (.ort) or PyTorch dir.

Parity checks, benchmarks and serving all need "texts in, logits out" with identical
tokenization; this is the single place that does it. A model's folder holds its tokenizer, its
`config.json` (label names) and `edgebert.json` (max length), as `export` writes them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.files import first_line
from bench.model_file import read_model_file
from bench.model_kind import is_token_classifier, saved_config
from bench.progress import ProgressLine
from bench.tokenizer import TOKENIZER_FILE, FastTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
TEXT_INPUT = "text"  # the one input of a text-in file (`export --text-input`)
CUSTOM_OP_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions' ops
EXTENSIONS_PACKAGE = "onnxruntime_extensions"


def model_kind(path: Path) -> str:
    if path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return "torch"
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if path.is_file() and path.suffix == ".ort":
        return "ort"
    if path.is_file() and path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        return "openvino"
    if path.is_dir() and (path / "model.onnx").is_file():
        return "onnx"
    raise BenchError(
        f"{path}: not a model (expected a .onnx, .ort or OpenVINO .xml file, or a directory "
        "with config.json and safetensors weights)"
    )


def read_label_names(folder: Path) -> list[str]:
    config = folder / "config.json"
    try:
        id2label = json.loads(config.read_text(encoding="utf-8"))["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]
    except (OSError, KeyError, ValueError) as exc:
        raise BenchError(f"{config}: cannot read label names ({exc})") from None


def read_max_length(folder: Path) -> int:
    return read_model_file(folder).max_length


@dataclass(frozen=True)
class RuntimeSettings:
    """ONNX Runtime knobs that change speed but never results; each is a benchmark lever.

    Defaults are what measured best on small CPUs: sequential execution (one graph branch at a
    time; BERT graphs have little branch parallelism), spinning worker threads, the memory
    arena and pattern planner on, no I/O binding (plain `run` copies little on CPU).
    """

    threads: int | None = None
    spinning: bool = True
    memory_pattern: bool = True
    cpu_arena: bool = True
    parallel: bool = False
    io_binding: bool = False
    optimization: str = "all"
    engine: str = "onnxruntime"  # or "openvino": the same .onnx file through OpenVINO's CPU plugin

    LEVELS = ("disable", "basic", "extended", "all")
    ENGINES = ("onnxruntime", "openvino")

    @classmethod
    def parse(cls, spec: str, base: RuntimeSettings | None = None) -> RuntimeSettings:
        """`threads=1,spinning=off,io_binding=on` (booleans: on/off, true/false, 1/0)."""
        base = base or cls()
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in known:
                raise BenchError(
                    f"runtime setting '{item}': expected key=value with key one of {', '.join(known)}"
                )
            changes[key] = _setting_value(key, value.strip().lower())
        return replace(base, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Benchmarks time several sessions in turn, each with its own intra-op thread pool. A pool
# that spins after its run keeps the cores busy while the next model runs: on 2 vCPUs that
# slowed the model timed after it by up to 3x (batch 1, measured). Interleaved timing therefore
# runs with spinning off unless asked otherwise; a single-model server keeps the ORT default.
BENCH_DEFAULTS = RuntimeSettings(spinning=False)


def model_settings(
    models: dict[str, Path], runtime: str = "", variants: dict[str, str] | None = None
) -> dict[str, RuntimeSettings]:
    """Settings per model name: `runtime` for all, plus variants {NEW: "MODEL:key=value,..."}
    that add MODEL again under NEW with those changes (MODEL names may contain ':')."""
    common = RuntimeSettings.parse(runtime, BENCH_DEFAULTS)
    settings = {name: common for name in models}
    for name, spec in (variants or {}).items():
        base, sep, changes = spec.rpartition(":")
        if not sep or "=" not in changes:
            base, changes = spec, ""
        if base not in models:
            raise BenchError(
                f"variant '{name}': unknown model '{base}'; expected one of {', '.join(models)}"
            )
        if name in models:
            raise BenchError(f"variant '{name}': the name is already taken")
        settings[name] = RuntimeSettings.parse(changes, common)
        models[name] = models[base]
    return settings


def _setting_value(key: str, value: str) -> Any:
    if key == "threads":
        if not value.isdigit() or int(value) < 1:
            raise BenchError(f"runtime setting threads: expected a positive integer, got '{value}'")
        return int(value)
    if key == "engine":
        if value not in RuntimeSettings.ENGINES:
            raise BenchError(
                f"runtime setting engine: expected one of {', '.join(RuntimeSettings.ENGINES)}"
            )
        return value
    if key == "optimization":
        if value not in RuntimeSettings.LEVELS:
            raise BenchError(
                f"runtime setting optimization: expected one of {', '.join(RuntimeSettings.LEVELS)}"
            )
        return value
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise BenchError(f"runtime setting {key}: expected on or off, got '{value}'")


def session_options(settings: RuntimeSettings):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.optimization]
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if settings.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.inter_op_num_threads = 1
    if settings.threads:
        options.intra_op_num_threads = settings.threads
    options.enable_mem_pattern = settings.memory_pattern
    options.enable_cpu_mem_arena = settings.cpu_arena
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.spinning else "0"
    )
    options.log_severity_level = 3
    return options


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
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)
    token_level: bool = False  # a token classifier: texts are word lists, logits per token
    fixed_shape: tuple[int, int] | None = None  # (batch, seq) of a static-shape file
    text_input: bool = False  # the tokenizer is in the graph (`export --text-input`)

    @property
    def files(self) -> list[Path]:
        """The files that make the model (an OpenVINO IR is its .xml and its .bin)."""
        if self.kind == "openvino":
            return [self.path, self.path.with_suffix(".bin")]
        return [self.path] if self.path.is_file() else sorted(self.path.glob("*.safetensors"))

    @property
    def zipped_bytes(self) -> int:
        """Bytes after zip deflate: what an app bundle or OTA update actually carries."""
        files = self.files
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for file in files:
                archive.write(file, file.name)
        return buffer.tell()

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def encode(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Tokenize a batch; `pad_to` pads to a fixed length (benchmarks), else to the longest."""
        if self.fixed_shape and (len(texts), pad_to) != self.fixed_shape:
            batch, seq = self.fixed_shape
            raise BenchError(
                f"{self.path.name} takes batch {batch} x seq {seq} only: time it with "
                f"--batch {batch} --seq {seq}"
            )
        if self.text_input:
            rows = [self._text_of_length(t, pad_to) if pad_to else t for t in texts]
            return {TEXT_INPUT: np.array(rows, dtype=object)}
        return self._feeds(self._tokenize(texts, pad_to))

    def _text_of_length(self, text: str, tokens: int) -> str:
        """A text a text-in graph reads as about `tokens` tokens (as an id-input file padded to
        that length reads it): the text repeated until long enough, cut, decoded back."""
        ids = self.tokenizer([text], truncation=False)["input_ids"][0][1:-1]  # no [CLS], [SEP]
        ids = (ids * (tokens // max(len(ids), 1) + 1))[: max(tokens - 2, 1)]
        return self.tokenizer.decode(ids)

    def _feeds(self, encoded) -> dict[str, np.ndarray]:
        feeds = {
            name: encoded[name].astype(np.int64) for name in self.input_names if name in encoded
        }
        if "token_type_ids" in self.input_names and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return feeds

    def _tokenize(self, texts, pad_to: int | None = None):
        words = bool(texts) and not isinstance(texts[0], str)  # token classification rows
        return self.tokenizer(
            [list(t) for t in texts] if words else list(texts),
            is_split_into_words=words,
            truncation=True,
            max_length=pad_to or self.max_length,
            padding="max_length" if pad_to else "longest",
            return_tensors="np",
        )

    def token_lengths(self, texts) -> list[int]:
        """Tokens per text as the model reads it (special tokens in, cut at max length)."""
        return [int(m.sum()) for m in self._tokenize(texts)["attention_mask"]]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.text_input:  # one text per call: the tokenizer op reads two as a pair
            return np.concatenate([self._run_text(text) for text in feeds[TEXT_INPUT]])
        if self.session is not None:
            return self.session.run(["logits"], feeds)[0]
        import torch

        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
            return self.torch_model(**tensors).logits.float().numpy()

    def _run_text(self, text: str) -> np.ndarray:
        try:
            return self.session.run(["logits"], {TEXT_INPUT: np.array([text], dtype=object)})[0]
        except UnicodeEncodeError:
            raise BenchError("a text is not valid Unicode (a lone surrogate?)") from None

    def bound(self, feeds: dict[str, np.ndarray]):
        """A zero-argument call on fixed feeds, as a server with pre-allocated inputs runs it.

        With `io_binding`, inputs and the output are bound to the session once, so repeated
        calls skip ORT's per-call input checks and output allocation."""
        if self.session is None or not self.settings.io_binding or self.text_input:
            return lambda: self.run(feeds)
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output("logits")

        def call() -> np.ndarray:
            self.session.run_with_iobinding(binding)
            return binding.get_outputs()[0].numpy()

        return call

    def _batches(self, texts: Sequence, batch_size: int):
        """(row indices, their encoding, their logits) in batches of similar length, so padding
        stays small; every text is tokenized once."""
        if self.fixed_shape:
            yield from self._fixed_batches(texts)
            return
        if self.text_input:
            for start in range(0, len(texts), batch_size):
                chunk = list(range(start, min(start + batch_size, len(texts))))
                yield chunk, None, self.run(self.encode([texts[i] for i in chunk]))
            return
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            encoded = self._tokenize([texts[i] for i in chunk])
            yield chunk, encoded, self.run(self._feeds(encoded))

    def _fixed_batches(self, texts: Sequence):
        """A static-shape file's batches: padded to its seq, its batch filled by repeating the
        last text (those rows' logits are dropped)."""
        assert self.fixed_shape is not None
        batch, seq = self.fixed_shape
        for start in range(0, len(texts), batch):
            chunk = list(range(start, min(start + batch, len(texts))))
            rows = [texts[i] for i in chunk] + [texts[chunk[-1]]] * (batch - len(chunk))
            encoded = self._tokenize(rows, seq)
            yield chunk, encoded, self.run(self._feeds(encoded))[: len(chunk)]

    def logits(self, texts: Sequence, batch_size: int = 32, progress: ProgressLine | None = None):
        """Logits for many texts, in input order. A token classifier gives a list with one
        [tokens, labels] array per text instead. `progress` gets the rows done per batch."""
        if self.token_level:
            rows: list = [None] * len(texts)
            for chunk, encoded, logits in self._batches(texts, batch_size):
                for i, row, mask in zip(chunk, logits, encoded["attention_mask"]):
                    rows[i] = row[: int(mask.sum())]
            return rows
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        done = 0
        for chunk, _, logits in self._batches(texts, batch_size):
            out[chunk] = logits
            done += len(chunk)
            if progress is not None:
                progress.update(done, force=done == len(texts))
        return out

    def word_tags(self, words: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[int]]:
        """A token classifier's label per word (its first piece decides); words cut off by
        the max length get label 0 (`O`), so every row keeps its length."""
        tags: list = [None] * len(words)
        for chunk, encoded, logits in self._batches(words, batch_size):
            for j, (i, row) in enumerate(zip(chunk, logits)):
                first: dict[int, int] = {}
                for position, word in enumerate(encoded.word_ids(j)):
                    if word is not None and word not in first:
                        first[word] = position
                tags[i] = [
                    int(row[first[w]].argmax()) if w in first else 0 for w in range(len(words[i]))
                ]
        return tags


def open_model(
    path: Path | str,
    threads: int | None = None,
    provider: str = "cpu",
    settings: RuntimeSettings | None = None,
) -> ModelRunner:
    """Load any supported model format with its tokenizer and label names.

    `threads` is a shortcut for `settings.threads` (it wins when both are given)."""
    path = Path(path)
    settings = settings or RuntimeSettings()
    if threads:
        settings = replace(settings, threads=threads)
    threads = settings.threads
    if not path.exists():
        raise BenchError(f"model not found: {path}")
    if provider not in PROVIDERS:
        raise BenchError(f"unknown provider '{provider}': use one of {', '.join(PROVIDERS)}")
    kind = model_kind(path)
    if kind == "onnx" and path.is_dir():
        path = path / "model.onnx"
    folder = path if path.is_dir() else path.parent
    runner = ModelRunner(
        path=path,
        kind=kind,
        tokenizer=None,
        label_names=[],
        max_length=read_max_length(folder),
        settings=settings,
    )
    if kind == "torch":
        runner.torch_model = _torch_model(folder, threads)
        runner.input_names = ["input_ids", "attention_mask"]
    elif settings.engine == "openvino" or kind == "openvino":
        runner.session, runner.input_names = _openvino_session(path, settings, kind)
    else:
        runner.session, runner.input_names = _onnx_session(path, settings, provider)
        runner.fixed_shape = _fixed_shape(runner.session)
        runner.text_input = runner.input_names == [TEXT_INPUT]
        if runner.text_input:
            runner.kind = "onnx-text"  # its rows are timed with tokenization inside
    runner.label_names = read_label_names(folder)
    runner.token_level = _is_token_classifier(folder)
    runner.tokenizer = _tokenizer(folder)
    return runner


def _torch_model(folder: Path, threads: int | None):
    """The PyTorch classifier of a model directory, with the head it was saved with."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForTokenClassification

    from bench.heads import sequence_classifier_class

    if threads:
        torch.set_num_threads(threads)
    try:
        auto = (
            AutoModelForTokenClassification
            if _is_token_classifier(folder)
            else sequence_classifier_class(folder)
        )
        return auto.from_pretrained(str(folder), use_safetensors=True).eval()
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise BenchError(f"{folder}: cannot load model ({first_line(exc, 200)})") from None


def _is_token_classifier(folder: Path) -> bool:
    return is_token_classifier(saved_config(folder))


def _tokenizer(folder: Path):
    """The folder's fast tokenizer without transformers; a folder with only a slow tokenizer
    (no tokenizer.json) goes through transformers' AutoTokenizer."""
    if (folder / TOKENIZER_FILE).is_file():
        return FastTokenizer(folder)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError) as exc:
        raise BenchError(
            f"{folder}: no usable tokenizer beside the model ({first_line(exc, 200)})"
        ) from None


class OpenVINOSession:
    """An OpenVINO compiled model behind the one call ModelRunner makes of an ORT session."""

    def __init__(self, compiled):
        self.request = compiled.create_infer_request()

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        return [results[name] for name in output_names]


def _openvino_session(path: Path, settings: RuntimeSettings, kind: str):
    """The .onnx file compiled by OpenVINO's CPU plugin (read straight from ONNX, as an
    OpenVINO user would): `threads` inference threads, the latency hint (one stream), and f32
    inference precision: on CPUs with bf16 instructions (Zen 4, Sapphire Rapids) OpenVINO
    otherwise runs fp32 graphs in bf16, which moved a test model's logits by up to 0.44."""
    if kind not in ("onnx", "openvino"):
        raise BenchError(f"{path}: engine=openvino runs .onnx and OpenVINO .xml files, not {kind}")
    try:
        import openvino
    except ImportError:
        raise BenchError(
            "engine=openvino needs OpenVINO: pip install 'edgebert[openvino]'"
        ) from None
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if settings.threads:
        config["INFERENCE_NUM_THREADS"] = settings.threads
    try:
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError for graphs it cannot read
        raise BenchError(f"{path}: OpenVINO cannot compile it ({first_line(exc, 200)})") from None
    names = [i.get_any_name() for i in compiled.inputs]
    if "input_ids" not in names or "logits" not in [o.get_any_name() for o in compiled.outputs]:
        raise BenchError(f"{path}: expected inputs input_ids/attention_mask and output logits")
    return OpenVINOSession(compiled), names


def _fixed_shape(session) -> tuple[int, int] | None:
    """(batch, seq) when every input of the graph has fixed dimensions (a file written by
    `export --static-shape`), else None."""
    shapes = {tuple(i.shape) for i in session.get_inputs()}
    if len(shapes) == 1:
        (shape,) = shapes
        if len(shape) == 2 and all(isinstance(d, int) for d in shape):
            return int(shape[0]), int(shape[1])
    return None


def _onnx_session(path: Path, settings: RuntimeSettings, provider: str):
    import onnxruntime as ort

    wanted = PROVIDERS[provider]
    if wanted not in ort.get_available_providers():
        raise BenchError(f"provider '{provider}' is not available in this onnxruntime build")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(settings), providers=[wanted]
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        if CUSTOM_OP_DOMAIN not in str(exc):
            raise BenchError(f"{path}: cannot load ({first_line(exc, 200)})") from None
        session = _session_with_extensions(path, settings, wanted)
    input_names = [i.name for i in session.get_inputs()]
    if input_names == [TEXT_INPUT]:
        return session, input_names
    if "input_ids" not in input_names or "logits" not in [o.name for o in session.get_outputs()]:
        raise BenchError(
            f"{path}: expected inputs input_ids/attention_mask and output logits, got {input_names}"
        )
    return session, input_names


def _session_with_extensions(path: Path, settings: RuntimeSettings, provider: str):
    """A graph with onnxruntime-extensions ops (a text-in file's tokenizer): the same session
    with the extensions' custom-op library registered."""
    import onnxruntime as ort

    options = session_options(settings)
    options.register_custom_ops_library(str(extensions_library(path)))
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=[provider])
    except Exception as exc:
        raise BenchError(f"{path}: cannot load ({first_line(exc, 200)})") from None


def extensions_library(needed_by: Path | str = "the text-in file") -> Path:
    """onnxruntime-extensions' custom-op library, found without importing the package: its
    `__init__` imports transformers (4.8 s of a text-in file's 5.2 s cold start, measured here),
    and ORT needs only the shared library's path."""
    spec = importlib.util.find_spec(EXTENSIONS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [
        Path(folder) / f"_extensions_pydll{suffix}"
        for folder in folders
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    ]
    found = [path for path in found if path.is_file()]
    if not found:
        raise BenchError(
            f"{needed_by}: its tokenizer op needs onnxruntime-extensions: pip install "
            "'edgebert[shipping]'"
        )
    return found[0]

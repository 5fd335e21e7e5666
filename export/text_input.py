"""A model file that takes text: the tokenizer inside the ONNX graph (`export --text-input`).

Apps in Kotlin, Swift or JS otherwise re-implement WordPiece and the cleaning steps, and must
keep them identical to Python. Here onnxruntime-extensions' `BertTokenizer` op (made by its
`gen_processing_models` from the model's own tokenizer, so vocabulary, lowercasing and accent
stripping match) feeds the id-input graph, and a Softmax follows it. The file's input is one
string (`text`, shape [1]: the op reads a 2-string batch as a sentence pair, so one text per
call); its outputs are `logits`, `probabilities` and the `input_ids` it read (for checking an
app against Python). Labels, max length and the cleaning steps are in `metadata_props`.

Cleaning steps that regular expressions do exactly as Python does are put in the graph. The
rest (`nfkc`, `unescape`, `lemmatize`, and `lower`: the extensions' StringLower lowers only some
scripts, measured here on Greek, Turkish and full-width letters) are refused by name unless the
app cleans (`app_cleans`), in which case no step is in the graph and the metadata lists what
the app must do before it calls the model (docs/shipping.md shows the code).

Running it needs the extensions' custom-op library registered with the session;
`bench.runtime.extensions_library` finds it for every text-in file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from bench.files import first_line, replace_file
from bench.model_file import read_model_file
from bench.runtime import (
    CUSTOM_OP_DOMAIN,
    TEXT_INPUT,
    extensions_library,
    open_model,
    read_label_names,
)
from export.errors import ExportError
from export.mobile import convert_to_ort
from export.parity import compare_logits

EXTRA = "pip install 'edgebert[shipping]' (onnxruntime-extensions)"
MAX_ABS_DIFF = 1e-4  # the text-in file runs the same graph: only float noise may differ
# Cleaning steps the graph does itself, as bench.cleaning does them in Python: each a list of
# (RE2 pattern, rewrite) for the extensions' StringRegexReplace. RE2's \s, \S and \w are
# ASCII-only where Python's are Unicode, so the classes are spelled out.
_SPACE = r"\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f} \x{85}\p{Z}"  # what Python's str.isspace accepts
_WORD = r"\p{L}\p{N}_"  # Python's \w: letters, digits (every kind) and the underscore
IN_GRAPH_STEPS: dict[str, list[tuple[str, str]]] = {
    "strip_html": [(r"<[^>]+>", " ")],
    "remove_control": [(r"[\t\n\r]", " "), (r"[\p{Cc}\p{Cf}\p{Co}]", "")],
    "collapse_whitespace": [(f"[{_SPACE}]+", " "), (r"^ | $", "")],
    "replace_urls": [(rf"(?i)(?:https?://|www\.)[^{_SPACE}]+", "http")],
    "replace_users": [(rf"(^|[^{_WORD}@])@[{_WORD}]+", r"\1@user")],
}


def text_input_model(
    onnx_path: Path, out_path: Path, app_cleans: bool = False
) -> tuple[Path, list[str]]:
    """Write the text-in copy of `onnx_path` (its folder holds the tokenizer and edgebert.json).
    Returns (path, the cleaning steps left to the app)."""
    folder = onnx_path.parent
    meta = read_model_file(folder)
    tokenizer = _tokenizer(folder)
    steps = list(meta.clean)
    outside = [s for s in steps if s not in IN_GRAPH_STEPS]
    if outside and not app_cleans:
        raise ExportError(
            f"--text-input: cleaning step '{outside[0]}' has no in-graph op; give --app-cleans "
            "to leave cleaning to the app (docs/shipping.md shows the code)"
        )
    in_graph = [] if app_cleans else steps
    model = _load(onnx_path)
    graph = _with_text_input(
        model, _tokenizer_node(tokenizer), _truncation(tokenizer, meta.max_length), in_graph
    )
    _set_metadata(graph, read_label_names(folder), meta.max_length, steps, app_cleans)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    onnx.save(graph, str(tmp))
    replace_file(tmp, out_path)
    return out_path, steps if app_cleans else []


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder}: cannot load the tokenizer ({first_line(exc)})") from None
    if type(tokenizer).__name__ not in ("BertTokenizerFast", "BertTokenizer"):
        raise ExportError(
            f"--text-input: {type(tokenizer).__name__} has no in-graph op here yet (WordPiece "
            "BERT tokenizers do)"
        )
    return tokenizer


def _tokenizer_node(tokenizer) -> onnx.NodeProto:
    """The extensions' BertTokenizer node for this tokenizer. Its own `max_length` attribute is
    not used: in onnxruntime-extensions 0.15.2 it corrupts the heap (measured here: glibc aborts
    with "free(): corrupted unsorted chunks" once ORT's arena is off); `_truncation` cuts."""
    try:
        from onnxruntime_extensions import gen_processing_models
    except ImportError:
        raise ExportError(f"--text-input needs onnxruntime-extensions: {EXTRA}") from None
    pre, _ = gen_processing_models(tokenizer, pre_kwargs={})
    node = next(n for n in pre.graph.node if n.op_type == "BertTokenizer")
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attributes["strip_accents"] = int(_strips_accents(tokenizer))
    attributes.pop("max_length", None)
    return helper.make_node(
        "BertTokenizer",
        [TEXT_INPUT],
        [f"{name}_full" for name in ("input_ids", "token_type_ids", "attention_mask")]
        + ["offset_mapping"],
        domain=CUSTOM_OP_DOMAIN,
        **attributes,
    )


def _truncation(tokenizer, max_length: int) -> tuple[list[onnx.NodeProto], list]:
    """Cut each 1-D tokenizer output as Python's tokenizer does, then add the batch axis: all
    but the closing [SEP] (its mask 1, its type 0), at most `max_length - 1` of those, then the
    closing token again. A text that fits comes out unchanged."""
    nodes: list[onnx.NodeProto] = []
    constants = [
        helper.make_tensor("cut_start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("cut_drop_last", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("cut_keep", TensorProto.INT64, [1], [max_length - 1]),
        helper.make_tensor("batch_axis", TensorProto.INT64, [1], [0]),
    ]
    closing = {"input_ids": tokenizer.sep_token_id, "attention_mask": 1, "token_type_ids": 0}
    for name, value in closing.items():
        constants.append(helper.make_tensor(f"{name}_closing", TensorProto.INT64, [1], [value]))
        nodes += [
            helper.make_node(
                "Slice", [f"{name}_full", "cut_start", "cut_drop_last"], [f"{name}_open"]
            ),
            helper.make_node("Slice", [f"{name}_open", "cut_start", "cut_keep"], [f"{name}_kept"]),
            helper.make_node("Concat", [f"{name}_kept", f"{name}_closing"], [f"{name}_1d"], axis=0),
            helper.make_node("Unsqueeze", [f"{name}_1d", "batch_axis"], [name]),
        ]
    return nodes, constants


def _strips_accents(tokenizer) -> bool:
    """BERT's normalizer strips accents when told to, or, untold, whenever it lowercases."""
    normalizer = json.loads(tokenizer.backend_tokenizer.to_str()).get("normalizer") or {}
    strip = normalizer.get("strip_accents")
    return bool(normalizer.get("lowercase")) if strip is None else bool(strip)


def _load(onnx_path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise ExportError(f"{onnx_path}: not a readable ONNX file ({first_line(exc)})") from None
    names = [i.name for i in model.graph.input]
    if "input_ids" not in names or TEXT_INPUT in names:
        raise ExportError(f"{onnx_path}: expected an id-input classifier, got inputs {names}")
    return model


def _cleaning_nodes(steps: Sequence[str]) -> tuple[list[onnx.NodeProto], list, str]:
    """String ops for the in-graph cleaning steps, reading the text input in turn; returns
    (nodes, their pattern constants, the cleaned text's name)."""
    nodes: list[onnx.NodeProto] = []
    constants = []
    current = TEXT_INPUT
    for step in steps:
        for index, (pattern, rewrite) in enumerate(IN_GRAPH_STEPS[step]):
            name = f"{step}_{index}"
            constants += [
                helper.make_tensor(f"{name}_pattern", TensorProto.STRING, [1], [pattern.encode()]),
                helper.make_tensor(f"{name}_rewrite", TensorProto.STRING, [1], [rewrite.encode()]),
            ]
            nodes.append(
                helper.make_node(
                    "StringRegexReplace",
                    [current, f"{name}_pattern", f"{name}_rewrite"],
                    [name],
                    domain=CUSTOM_OP_DOMAIN,
                    global_replace=1,
                )
            )
            current = name
    return nodes, constants, current


def _with_text_input(
    model: onnx.ModelProto,
    tokenizer_node: onnx.NodeProto,
    truncation: tuple[list[onnx.NodeProto], list],
    steps: Sequence[str],
) -> onnx.ModelProto:
    """The model graph with a string input, cleaning, the tokenizer and a Softmax around it."""
    graph = model.graph
    cleaning, constants, cleaned = _cleaning_nodes(steps)
    tokenizer_node.input[0] = cleaned
    glue, glue_constants = truncation
    softmax = helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)
    nodes = [*cleaning, tokenizer_node, *glue, *graph.node, softmax]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend([*glue_constants, *constants])
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, [1]))
    labels = graph.output[0].type.tensor_type.shape.dim[-1].dim_value or None
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, labels]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, labels]),
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None]),
        ]
    )
    if not any(o.domain == CUSTOM_OP_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CUSTOM_OP_DOMAIN, 1))
    return model


def _set_metadata(
    model: onnx.ModelProto, labels: list[str], max_length: int, steps: list[str], app: bool
) -> None:
    entries = {
        "edgebert.labels": json.dumps(labels),
        "edgebert.max_length": str(max_length),
        "edgebert.clean": json.dumps(steps),
        "edgebert.clean_in": "app" if app and steps else "graph",
    }
    kept = [p for p in model.metadata_props if not p.key.startswith("edgebert.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def text_parity(id_file: Path, text_file: Path, texts: Sequence[str]) -> dict:
    """Both files on the same (cleaned) texts: token ids, logits and labels; an ExportError
    when a logit moves by more than MAX_ABS_DIFF."""
    if not texts:
        raise ExportError("no texts for the parity check")
    ids, text = open_model(id_file), open_model(text_file)
    result = compare_logits(ids.logits(texts), text.logits(texts), max_abs_diff=MAX_ABS_DIFF)
    if not result.passed:
        differ = [t for t in texts if _graph_ids(text, t) != _python_ids(ids, t)]
        cause = (
            f"the tokenizer op splits {len(differ)} of {len(texts)} texts differently, e.g. "
            f"{differ[0][:60]!r} (a word glued to an emoji or symbol: Python's WordPiece reads "
            "the whole word as [UNK], the op splits the symbol off)"
            if differ
            else "the same token ids"
        )
        raise ExportError(
            f"--text-input: {text_file.name} differs from {id_file.name} by "
            f"{result.max_abs_diff:.2e} (over {MAX_ABS_DIFF:g}; labels agree "
            f"{result.label_agreement:.1%}): {cause}"
        )
    return result.as_dict()


def _graph_ids(runner, text: str) -> list[int]:
    feeds = {TEXT_INPUT: np.array([text], dtype=object)}
    return runner.session.run(["input_ids"], feeds)[0][0].tolist()


def _python_ids(runner, text: str) -> list[int]:
    return list(runner.tokenizer([text], max_length=runner.max_length)["input_ids"][0])


def text_input_ort(text_file: Path) -> Path:
    """The text-in file in ORT format (for ONNX Runtime Mobile), converted with the extensions'
    ops registered; the app registers the same library (docs/shipping.md)."""
    ort_path, _ = convert_to_ort(text_file, text_file.parent, extensions_library(text_file))
    return ort_path

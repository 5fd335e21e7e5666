"""Half-precision lookup tables: the `fp16_table` export variant.

A static-embedding classifier is almost all table (one row per token), and a transformer's
word embedding is its largest single weight. A lookup needs no arithmetic on the table, so
storing it in float16 halves the file at no speed cost: the Gather reads float16 rows and one
Cast turns the few rows a batch touches back into float32 for the rest of the graph. Rounding to
float16 moves each vector by about 1e-3 of its size; parity measures what that does to labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.files import replace_file
from export.errors import ExportError


def fp16_tables(onnx_path: Path, out_path: Path) -> Path:
    """Copy of `onnx_path` whose token tables (float32 Gathers indexed by a graph input, i.e.
    by token ids, or by a `Mod` of them: a static student's hashed token pairs) are stored in
    float16; position and token-type tables stay as they are."""
    model = onnx.load(str(onnx_path))
    token_indices = {i.name for i in model.graph.input} | {
        node.output[0] for node in model.graph.node if node.op_type == "Mod"
    }
    initializers = {init.name: init for init in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    converted = 0
    for node in model.graph.node:
        by_ids = node.op_type == "Gather" and node.input[1] in token_indices
        table = initializers.get(node.input[0]) if by_ids else None
        if table is None or table.data_type != TensorProto.FLOAT:
            nodes.append(node)
            continue
        half = numpy_helper.to_array(table).astype(np.float16)
        table.CopyFrom(numpy_helper.from_array(half, table.name))
        rows = node.output[0]
        node.output[0] = f"{rows}_fp16"
        nodes += [node, helper.make_node("Cast", [node.output[0]], [rows], to=TensorProto.FLOAT)]
        converted += 1
    if not converted:
        raise ExportError(f"{onnx_path}: no float32 token table to store in float16")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    onnx.save(model, str(tmp))
    replace_file(tmp, out_path)
    return out_path

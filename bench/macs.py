"""Multiply-accumulates of an ONNX graph at a given batch and sequence length.

Effective GMAC/s (graph MACs x calls per second) against the CPU's peak says how close a model
runs to the hardware, independent of how small it is. Shapes come from ORT's symbolic shape
inference, which also knows the contrib ops of fused graphs (Attention, MatMulIntegerToFloat).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.errors import BenchError

# Ops whose cost is a matrix product A[..., K] x B[K, N]; everything else is negligible here.
MATMUL_OPS = {
    "MatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "FusedMatMul",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "Gemm",
    "QGemm",
}


def graph_macs(path: Path, batch_size: int, seq_length: int) -> int:
    """MACs of one call with inputs of shape (batch_size, seq_length)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others
        raise BenchError(f"{path}: cannot read the graph ({exc})") from None
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if len(dims) == 2:
            dims[0].dim_value, dims[1].dim_value = batch_size, seq_length
    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as exc:
        raise BenchError(f"{path}: shape inference failed ({exc})") from None
    shapes = _known_shapes(inferred)
    total = 0
    for node in inferred.graph.node:
        if node.op_type in MATMUL_OPS:
            total += _matmul_macs(node, shapes)
        elif node.op_type == "Attention":
            total += _attention_macs(node, shapes)
    return total


def _known_shapes(model) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _matmul_macs(node, shapes: dict[str, list[int]]) -> int:
    """Output elements x the shared dimension K, for plain and batched products alike."""
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not a or not out:
        return 0
    transpose_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
    k = a[-2] if transpose_a else a[-1]
    return int(np.prod(out, dtype=np.int64)) * k


def _attention_macs(node, shapes: dict[str, list[int]]) -> int:
    """com.microsoft.Attention: the QKV projection plus scores and context (2 x B x S x S x H)."""
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    if not x or not w:
        return 0
    batch, seq, hidden = x
    return batch * seq * hidden * w[-1] + 2 * batch * seq * seq * (w[-1] // 3)

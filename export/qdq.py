"""Post-processing of QDQ graphs exported from fake-quantized PyTorch models.

The exporter writes each weight as a float initializer followed by QuantizeLinear, so the file is
as large as the fp32 model and ONNX Runtime quantizes the weights at every load. Folding those
constant QuantizeLinear nodes stores the int8 weights themselves: a quarter of the size, and the
DequantizeLinear -> MatMul pattern ORT fuses into integer kernels stays as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.files import first_line, replace_file
from export.errors import ExportError


def fold_weight_quantization(onnx_path: Path, out_path: Path | None = None) -> int:
    """Replace QuantizeLinear(constant) by its int8/uint8 result; returns how many were folded."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{onnx_path}: not a valid ONNX model ({first_line(exc, 200)})") from None
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    constants = {
        node.output[0]: numpy_helper.to_array(node.attribute[0].t)
        for node in graph.node
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
    }
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def constant(name: str):
        while name not in initializers and name in aliases:
            name = aliases[name]
        if name in initializers:
            return numpy_helper.to_array(initializers[name])
        return constants.get(name)

    kept, folded = [], 0
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            weight, scale = constant(node.input[0]), constant(node.input[1])
            zero = constant(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8)
            if weight is not None and scale is not None and zero is not None:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * weight.ndim
                if scale.ndim == 1 and scale.size > 1:
                    shape[axis] = scale.size
                info = np.iinfo(zero.dtype)
                values = np.round(weight / scale.reshape(shape)) + zero.reshape(shape).astype(
                    np.int64
                )
                quantized = np.clip(values, info.min, info.max).astype(zero.dtype)
                graph.initializer.append(numpy_helper.from_array(quantized, node.output[0]))
                folded += 1
                continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    target = out_path or onnx_path
    tmp = target.with_name(f".{target.name}.tmp")
    onnx.save(model, str(tmp))
    replace_file(tmp, target)
    return folded


def quantize_embedding_tables(onnx_path: Path, min_rows: int = 1000) -> int:
    """Store large Gather tables (word embeddings) as int8 with one scale per row.

    ORT's quantizers leave the word embedding in float (or quantize it per tensor), and for a
    small student it is most of the file. Per-row symmetric int8 keeps each token's vector to
    within half a step of its own range. The lookup becomes Gather(int8) -> Cast -> Mul(Gather
    (scales)): only the looked-up rows are dequantized, so the cost is per token, not per table.
    Returns how many tables were converted.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    converted, new_nodes = 0, []
    for node in graph.node:
        table = initializers.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (
            table is None
            or table.data_type != onnx.TensorProto.FLOAT
            or len(table.dims) != 2
            or table.dims[0] < min_rows
            or axis != 0
        ):
            new_nodes.append(node)
            continue
        weights = numpy_helper.to_array(table)
        scales = np.maximum(np.abs(weights).max(axis=1), 1e-12) / 127.0
        quantized = np.clip(np.round(weights / scales[:, None]), -127, 127).astype(np.int8)
        base = table.name
        graph.initializer.remove(table)
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{base}_int8"),
                numpy_helper.from_array(scales[:, None].astype(np.float32), f"{base}_row_scale"),
            ]
        )
        rows, row_scales, as_float = (f"{node.output[0]}_{s}" for s in ("int8", "scale", "float"))
        new_nodes += [
            helper.make_node("Gather", [f"{base}_int8", node.input[1]], [rows], axis=0),
            helper.make_node("Gather", [f"{base}_row_scale", node.input[1]], [row_scales], axis=0),
            helper.make_node("Cast", [rows], [as_float], to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [as_float, row_scales], [node.output[0]]),
        ]
        converted += 1
    if converted:
        del graph.node[:]
        graph.node.extend(new_nodes)
        tmp = onnx_path.with_name(f".{onnx_path.name}.tmp")
        onnx.save(model, str(tmp))
        replace_file(tmp, onnx_path)
    return converted

"""`edgebert export --static-shape BATCHxSEQ`: a copy of the shipped file with fixed input shapes.

Phone accelerators reach ONNX Runtime through execution providers that need static shapes
(NNAPI on Android, Core ML on iOS, QNN on Qualcomm NPUs: onnxruntime issues 11073 and 25421);
with dynamic batch and sequence axes they fall back to the CPU. ONNX Runtime's own tools fix the
shapes (`onnx_model_utils.make_input_shape_fixed`, then `fix_output_shapes`), and the copy is
checked against the dynamic file at that shape before it is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

from bench.files import first_line, write_bytes_atomic
from bench.runtime import open_model
from export.errors import ExportError
from export.options import Parity
from export.parity import compare_logits

MOBILE_PROVIDERS = "NNAPI (Android), Core ML (iOS) and QNN (Qualcomm NPUs)"
MAX_ABS_DIFF = 1e-4  # the same graph on the same inputs: only the shape annotations differ
MIN_LABEL_AGREEMENT = Parity.model_fields["min_label_agreement"].default  # the INT8 rule
INTEGER_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearMatMul",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}


def parse_static_shape(spec: str) -> tuple[int, int]:
    """`1x64` -> (1, 64); a one-line error naming the option otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
    if not match or not all(0 < int(v) <= 4096 for v in match.groups()):
        raise ExportError(f"--static-shape: expected BATCHxSEQ such as 1x64, got '{spec}'")
    return int(match[1]), int(match[2])


def write_static_shape(onnx_path: Path, batch: int, seq: int) -> Path:
    """`<stem>_static_<B>x<S>.onnx` beside `onnx_path`, every input fixed to [batch, seq]."""
    if not onnx_path.is_file():
        raise ExportError(f"model not found: {onnx_path}")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and OS errors alike
        raise ExportError(f"{onnx_path}: not a readable ONNX file ({first_line(exc)})") from None
    for graph_input in model.graph.input:
        make_input_shape_fixed(model.graph, graph_input.name, [batch, seq])
    fix_output_shapes(model)
    onnx.checker.check_model(model)
    target = onnx_path.with_name(f"{onnx_path.stem}_static_{batch}x{seq}.onnx")
    write_bytes_atomic(target, model.SerializeToString())
    return target


def static_parity(dynamic: Path, static: Path, texts: list[str]) -> dict:
    """Logits of both files on the same texts (the static one in its fixed batches): the
    largest difference and the label agreement. A float graph fails past `MAX_ABS_DIFF`. An
    integer graph is held to the export's INT8 rule (labels that agree) instead: with its
    shapes fixed, ORT fuses its QDQ pairs into other integer kernels, whose rounding differs
    (the quickstart's QAT file on an AVX2 CPU: max |dlogit| 0.26, labels agree 99.0%; with ORT's
    optimizations off, 0.0)."""
    fixed, free = open_model(static), open_model(dynamic)
    batch, seq = fixed.fixed_shape or (0, 0)
    rows = texts[: max(batch, (len(texts) // batch) * batch)]
    want = np.concatenate(
        [free.run(free.encode(rows[i : i + batch], pad_to=seq)) for i in range(0, len(rows), batch)]
    )
    integer = _integer_graph(static)
    result = compare_logits(
        want,
        fixed.logits(rows),
        max_abs_diff=None if integer else MAX_ABS_DIFF,
        min_label_agreement=MIN_LABEL_AGREEMENT if integer else None,
    )
    if not result.passed:
        raise ExportError(
            f"--static-shape: {static.name} against {dynamic.name} at {batch}x{seq}: "
            + (
                f"labels agree {result.label_agreement:.2%} (need {MIN_LABEL_AGREEMENT:.0%} "
                "for INT8)"
                if integer
                else f"differs by {result.max_abs_diff:.2e} (over {MAX_ABS_DIFF:g})"
            )
        )
    return result.as_dict()


def _integer_graph(path: Path) -> bool:
    """Whether the graph computes in integers anywhere (QDQ pairs, integer matmuls)."""
    model = onnx.load(str(path), load_external_data=False)
    return any(node.op_type in INTEGER_OPS for node in model.graph.node)

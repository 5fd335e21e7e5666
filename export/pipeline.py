"""The whole export of one model: ONNX, fused graph, PTQ variants, .ort, parity for each.

Used by both `edgebert export` and the recipe's `export` stage, so the two never drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.model_kind import saved_static
from bench.runtime import open_model
from export.errors import ExportError
from export.mobile import convert_to_ort
from export.onnx_export import export_onnx, fused_op_counts, optimize_onnx
from export.openvino_ir import convert_to_openvino
from export.options import ExportOptions
from export.parity import compare_logits
from export.quantize import calibration_feeds, quantize_dynamic_int8, quantize_static_int8
from export.table_fp16 import fp16_tables


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path]
    parity: dict[str, dict]
    sizes: dict[str, int]
    op_counts: dict[str, dict[str, int]]
    enforce: Sequence[str] | None = None

    @property
    def failures(self) -> list[str]:
        return [
            f"{name} parity failed: max |dlogit| {p['max_abs_diff']:.2e}"
            + (f" (limit {p['max_abs_diff_limit']:.0e})" if p["max_abs_diff_limit"] else "")
            + f", labels agree {p['label_agreement']:.2%}"
            + (f" (need {p['min_label_agreement']:.0%})" if p["min_label_agreement"] else "")
            for name, p in self.parity.items()
            if not p["passed"] and (self.enforce is None or name in self.enforce)
        ]


def export_model(
    model_dir: Path,
    out_dir: Path,
    texts: Sequence[str],
    options: ExportOptions | None = None,
    log: Callable[[str], None] = print,
    calibration_texts: Sequence[str] | None = None,
    made_elsewhere: dict[str, Path] | None = None,
) -> ExportResult:
    """Export `model_dir`, check every variant against PyTorch on `texts`, return what was made.

    Static INT8 calibrates on `calibration_texts` (training rows; defaults to `texts`), so the
    parity rows are never the rows the quantizer saw. `made_elsewhere` are ONNX files already
    made from this model (QAT's graph, by the training stage): they get the same parity check
    and may become the `.ort` file.
    """
    options = options or ExportOptions()  # validated: quantize modes are QUANTIZE_MODES
    if not texts:
        raise ExportError("no texts for the parity check")
    files: dict[str, Path] = {"fp32": export_onnx(model_dir, out_dir)}
    log(f"exported {files['fp32']}")
    if options.optimize and not saved_static(model_dir):  # nothing to fuse without attention
        files["fp32_fused"] = optimize_onnx(files["fp32"], out_dir / "model_fused.onnx")
    source = files["fp32"]
    if "dynamic" in options.quantize:
        files["dynamic_int8"] = quantize_dynamic_int8(
            source, out_dir / "model_dynamic_int8.onnx", per_channel=False
        )
    if "static" in options.quantize:
        feeds = calibration_feeds(source, calibration_texts or texts, options.calibration.rows)
        files["static_int8"] = quantize_static_int8(
            source,
            out_dir / "model_static_int8.onnx",
            feeds,
            method=options.calibration.method,
            per_channel=options.calibration.per_channel,
            reduce_range=options.calibration.reduce_range,
        )
    if "fp16_table" in options.quantize:
        files["fp16_table"] = fp16_tables(source, out_dir / "model_fp16_table.onnx")
    files.update(made_elsewhere or {})
    variant = options.ort_variant or list(files)[-1]
    if variant not in files:
        raise ExportError(f"ort variant '{variant}' was not made (made: {', '.join(files)})")
    if "ort" in options.formats:
        files[f"{variant}_ort"], _ = convert_to_ort(files[variant], out_dir)
    if "openvino" in options.formats:
        files[f"{variant}_openvino"] = convert_to_openvino(files[variant], out_dir)
    parity_texts = list(texts[: options.parity.rows])
    reference = open_model(model_dir).logits(parity_texts)
    parity: dict[str, dict] = {}
    for name, path in files.items():
        candidate = open_model(path).logits(parity_texts)
        is_float = name.startswith("fp32")
        result = compare_logits(
            reference,
            candidate,
            max_abs_diff=options.parity.max_abs_diff if is_float else None,
            min_label_agreement=None if is_float else options.parity.min_label_agreement,
        )
        parity[name] = result.as_dict()
        log(f"parity {name}: {result.summary()}{'' if result.passed else '  FAILED'}")
    return ExportResult(
        out_dir=out_dir,
        files=files,
        parity=parity,
        sizes={name: _size(path) for name, path in files.items()},
        op_counts={
            name: fused_op_counts(path) for name, path in files.items() if path.suffix == ".onnx"
        },
        enforce=options.parity.enforce,
    )


def _size(path: Path) -> int:
    """Bytes on disk; an OpenVINO IR counts its .bin beside the .xml."""
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" else 0)

"""The whole export of one model: ONNX, fused graph, PTQ variants, .ort, parity for each.

Used by both `edgebert export` and the recipe's `export` stage, so the two never drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from export.errors import ExportError
from export.mobile import convert_to_ort
from export.onnx_export import export_onnx, fused_op_counts, optimize_onnx
from export.parity import compare_logits
from export.quantize import quantize_dynamic_int8, quantize_static_int8

QUANTIZE_MODES = ("dynamic", "static")


@dataclass
class ExportOptions:
    optimize: bool = True
    quantize: Sequence[str] = ()
    calibration_rows: int = 256
    calibration_method: str = "minmax"
    per_channel: bool = True
    ort_format: bool = False
    ort_variant: str | None = None  # which variant becomes the .ort file (default: last made)
    parity_rows: int = 512
    max_abs_diff: float = 1e-4
    min_label_agreement: float = 0.99
    enforce: Sequence[str] | None = None  # variants whose failed parity fails the export; None: all
    extra_onnx: dict[str, Path] = field(default_factory=dict)  # e.g. a QAT-exported graph


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
) -> ExportResult:
    """Export `model_dir`, check every variant against PyTorch on `texts`, return what was made.

    Static INT8 calibrates on `calibration_texts` (training rows; defaults to `texts`), so the
    parity rows are never the rows the quantizer saw.
    """
    from bench.runtime import open_model

    options = options or ExportOptions()
    for mode in options.quantize:
        if mode not in QUANTIZE_MODES:
            raise ExportError(f"quantize mode '{mode}': use one of {', '.join(QUANTIZE_MODES)}")
    if not texts:
        raise ExportError("no texts for the parity check")
    files: dict[str, Path] = {"fp32": export_onnx(model_dir, out_dir)}
    log(f"exported {files['fp32']}")
    if options.optimize:
        files["fp32_fused"] = optimize_onnx(files["fp32"], out_dir / "model_fused.onnx")
    source = files["fp32"]
    if "dynamic" in options.quantize:
        files["dynamic_int8"] = quantize_dynamic_int8(
            source, out_dir / "model_dynamic_int8.onnx", per_channel=False
        )
    if "static" in options.quantize:
        runner = open_model(source)
        rows = list((calibration_texts or texts)[: options.calibration_rows])
        feeds = [runner.encode(rows[i : i + 16]) for i in range(0, len(rows), 16)]
        files["static_int8"] = quantize_static_int8(
            source, out_dir / "model_static_int8.onnx", feeds, method=options.calibration_method,
            per_channel=options.per_channel,
        )
    files.update(options.extra_onnx)
    if options.ort_format:
        variant = options.ort_variant or list(files)[-1]
        if variant not in files:
            raise ExportError(f"ort variant '{variant}' was not made (made: {', '.join(files)})")
        files[f"{variant}_ort"], _ = convert_to_ort(files[variant], out_dir)
    parity_texts = list(texts[: options.parity_rows])
    reference = open_model(model_dir).logits(parity_texts)
    parity: dict[str, dict] = {}
    for name, path in files.items():
        candidate = open_model(path).logits(parity_texts)
        is_float = name.startswith("fp32")
        result = compare_logits(
            reference, candidate,
            max_abs_diff=options.max_abs_diff if is_float else None,
            min_label_agreement=None if is_float else options.min_label_agreement,
        )
        parity[name] = result.as_dict()
        log(f"parity {name}: {result.summary()}{'' if result.passed else '  FAILED'}")
    return ExportResult(
        out_dir=out_dir,
        files=files,
        parity=parity,
        sizes={name: path.stat().st_size for name, path in files.items()},
        op_counts={name: fused_op_counts(path) for name, path in files.items() if path.suffix == ".onnx"},
        enforce=options.enforce,
    )

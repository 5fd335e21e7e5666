"""Post-training INT8 through onnxruntime.quantization: the baselines QAT must beat.

- dynamic: int8 weights, activations quantized at run time (no calibration data);
- static QDQ: activations calibrated on K rows (MinMax / Percentile / Entropy), U8S8 by default
  since unsigned activations reach the VNNI kernels on x86 (signed S8S8 barely does);
- Optimum's dynamic INT8 (`ORTQuantizer` + `AutoQuantizationConfig`): the peer a user would pick.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from bench.files import first_line, replace_file
from bench.runtime import open_model
from export.errors import ExportError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def _check_onnx(path: Path) -> None:
    import onnx

    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"{path}: not a valid ONNX model ({first_line(exc, 200)})") from None


def preprocess(onnx_path: Path, out_path: Path) -> Path:
    """Shape inference + graph merge that quantization needs (auto_merge for BERT graphs)."""
    from onnxruntime.quantization import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)
    quant_pre_process(str(onnx_path), str(out_path), auto_merge=True, skip_optimization=False)
    return out_path


def quantize_dynamic_int8(onnx_path: Path, out_path: Path, per_channel: bool = False) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _check_onnx(onnx_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared = preprocess(onnx_path, Path(tmp) / "prep.onnx")
        staged = Path(tmp) / out_path.name
        quantize_dynamic(
            str(prepared),
            str(staged),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
        )
        replace_file(staged, out_path)
    return out_path


class _FeedReader:
    """Calibration batches for onnxruntime's static quantizer."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._iter: Iterator = iter(list(feeds))

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):  # pragma: no cover - ORT calls it for some methods
        pass


def calibration_feeds(onnx_path: Path, texts: Sequence[str], rows: int) -> list[dict]:
    """The graph's own input arrays for the first `rows` texts, 16 texts per batch: what static
    quantizers (ONNX Runtime's, NNCF's) calibrate activation ranges on."""
    runner = open_model(onnx_path)
    texts = list(texts[:rows])
    return [runner.encode(texts[i : i + 16]) for i in range(0, len(texts), 16)]


def quantize_static_int8(
    onnx_path: Path,
    out_path: Path,
    calibration_feeds: Iterable[dict[str, np.ndarray]],
    method: str = "minmax",
    per_channel: bool = True,
    activation_type: str = "uint8",
    reduce_range: bool = False,
) -> Path:
    """Static QDQ INT8 with activations calibrated on the given feeds. `reduce_range` keeps
    weights in 7 bits: x86 CPUs without VNNI multiply u8 x s8 pairs with VPMADDUBSW, whose 16-bit
    sums of two products saturate at full 8-bit range (wrong labels on AVX2-only CPUs)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ExportError(
            f"calibration method '{method}': use one of {', '.join(CALIBRATION_METHODS)}"
        )
    _check_onnx(onnx_path)
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    activation = QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared = preprocess(onnx_path, Path(tmp) / "prep.onnx")
        staged = Path(tmp) / out_path.name
        quantize_static(
            str(prepared),
            str(staged),
            _FeedReader(calibration_feeds),
            quant_format=QuantFormat.QDQ,
            activation_type=activation,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=calibrate,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        replace_file(staged, out_path)
    return out_path


def optimum_dynamic_int8(onnx_dir: Path, out_dir: Path) -> Path:
    """Optimum's dynamic INT8 (AVX-512 VNNI config, per-tensor): the peer baseline."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(str(onnx_dir), file_name="model.onnx")
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=str(out_dir), quantization_config=config)
    return out_dir / "model_quantized.onnx"

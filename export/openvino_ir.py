"""OpenVINO IR (`.xml` graph + `.bin` weights) of an exported ONNX file, for users whose
runtime is OpenVINO: converted once here rather than at every load, weights kept as they are
(no fp16 compression: a QDQ INT8 graph keeps its int8 weights, an fp32 one its fp32 ones).
`bench`, `predict` and `serve` open the `.xml` like any other model file."""

from __future__ import annotations

from pathlib import Path

from export.errors import ExportError


def convert_to_openvino(onnx_path: Path, out_dir: Path) -> Path:
    try:
        import openvino
    except ImportError:
        raise ExportError(
            "formats: openvino needs OpenVINO: pip install 'edgebert[openvino]'"
        ) from None
    xml = out_dir / f"{onnx_path.stem}.xml"
    try:
        model = openvino.convert_model(str(onnx_path))
        openvino.save_model(model, str(xml), compress_to_fp16=False)
    except Exception as exc:  # OpenVINO raises RuntimeError/OpConversionFailure
        raise ExportError(f"{onnx_path}: OpenVINO conversion failed ({exc})") from None
    return xml


def nncf_int8(onnx_path: Path, out_dir: Path, calibration_feeds: list[dict]) -> Path:
    """NNCF post-training INT8 of the ONNX file read into OpenVINO (`nncf.quantize`, the
    transformer model type, calibrated on `calibration_feeds`, the model's own input arrays),
    saved as IR: what an OpenVINO user makes instead of ONNX Runtime's dynamic INT8, which
    OpenVINO runs slowly (its MatMulInteger ops are not OpenVINO's INT8 path)."""
    try:
        import nncf
        import openvino
    except ImportError:
        raise ExportError(
            "openvino_int8 needs OpenVINO and NNCF: pip install 'edgebert[openvino]'"
        ) from None
    xml = out_dir / "model_nncf_int8.xml"
    try:
        quantized = nncf.quantize(
            openvino.convert_model(str(onnx_path)),
            nncf.Dataset(calibration_feeds),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration_feeds),
        )
        openvino.save_model(quantized, str(xml), compress_to_fp16=False)
    except Exception as exc:  # NNCF/OpenVINO raise their own types
        raise ExportError(f"{onnx_path}: NNCF INT8 failed ({exc})") from None
    return xml

"""ONNX -> ORT format (`.ort`) for ONNX Runtime Mobile, plus its reduced-ops config."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.files import replace_file
from export.errors import ExportError


def convert_to_ort(
    onnx_path: Path, out_dir: Path, custom_op_library: Path | None = None
) -> tuple[Path, Path]:
    """Write `<stem>.ort` and `<stem>.required_operators.config` into `out_dir`.

    The config lists the operators (and types) the model needs, for a reduced-size ORT Mobile
    build; the `.ort` file loads in the regular onnxruntime too, which is how it is verified.
    A graph with onnxruntime-extensions ops (a text-in file) converts with that library given.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    if not onnx_path.is_file():
        raise ExportError(f"ONNX file not found: {onnx_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged_input = Path(tmp) / "in" / onnx_path.name
        staged_input.parent.mkdir()
        shutil.copy(onnx_path, staged_input)
        convert_onnx_models_to_ort(
            staged_input.parent,
            output_dir=Path(tmp) / "out",
            optimization_styles=[OptimizationStyle.Fixed],
            custom_op_library_path=custom_op_library,
            enable_type_reduction=True,
        )
        produced = list((Path(tmp) / "out").glob("*.ort"))
        configs = list((Path(tmp) / "out").glob("*.config"))
        if not produced:
            raise ExportError(f"{onnx_path}: ORT format conversion produced no .ort file")
        ort_path = out_dir / f"{onnx_path.stem}.ort"
        config_path = out_dir / f"{onnx_path.stem}.required_operators.config"
        replace_file(produced[0], ort_path)
        if configs:
            replace_file(configs[0], config_path)
    return ort_path, config_path

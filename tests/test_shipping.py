"""docs/shipping.md's tested snippet runs as written, on a text-in file of the tiny model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.text_input import text_input_model

pytest.importorskip("onnxruntime_extensions")
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "shipping.md"
MARKER = "<!-- tested: tests/test_shipping.py runs this block on a text-in file -->"


def guide_snippet() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    after = text.split(MARKER, 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_the_python_snippet_runs_as_written(tiny_onnx, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_onnx.parent, folder)
    steps = ["nfkc", "remove_control", "collapse_whitespace"]  # the quickstart's: app cleans
    (folder / "edgebert.json").write_text(
        json.dumps({"clean": steps, "max_length": 32, "labels": ["negative", "positive"]})
    )
    text_file, left = text_input_model(folder / tiny_onnx.name, folder / "t.onnx", app_cleans=True)
    assert left == steps
    snippet = tmp_path / "snippet.py"
    snippet.write_text(guide_snippet())
    out = subprocess.run(
        [sys.executable, str(snippet), str(text_file)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    label, probability = out.stdout.split()
    assert label in ("negative", "positive") and 0.5 <= float(probability) <= 1.0

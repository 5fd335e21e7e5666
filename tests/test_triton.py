"""`edgebert export --triton`: a model repository Triton would load. Every config.pbtxt is
parsed into Triton's own ModelConfig message (tritonclient) and checked against the ONNX graph;
the tokenizer model's code runs against a stand-in of Triton's Python-backend module, and its
ids fed to the repository's ONNX file give the labels bench gives."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bench.runtime import open_model
from tests.conftest import sample_rows

TEXTS = [row["text"] for row in sample_rows("validation", 60)]  # about 1 in 5 negative


def model_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def pb_utils_stand_in() -> types.ModuleType:
    """The three things a Python-backend model uses from `triton_python_backend_utils`."""
    module = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    module.Tensor = Tensor
    module.InferenceResponse = lambda output_tensors: {t.name: t.array for t in output_tensors}
    module.get_input_tensor_by_name = lambda request, name: request[name]
    return module


def run_tokenizer_model(model_py: Path, texts: list[str], monkeypatch) -> dict:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils_stand_in())
    spec = importlib.util.spec_from_file_location("triton_tokenizer_model", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({})
    Tensor = sys.modules["triton_python_backend_utils"].Tensor
    batch = np.array([[t.encode()] for t in texts], dtype=object)
    return model.execute([{"TEXT": Tensor("TEXT", batch)}])[0]


def test_triton_repository_parses_as_triton_configs_and_gives_bench_labels(
    tmp_path, varied_model_dir, run_cli, monkeypatch
):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"latency": [{"batch_size": b} for b in (1, 16, 64)]}))
    out, repo = tmp_path / "export", tmp_path / "triton"
    code, stdout, err = run_cli(
        "export", varied_model_dir, "--out", out, "--quantize", "dynamic", "--texts", texts_file,
        "--min-label-agreement", "0", "--triton", repo, "--triton-name", "sentiment",
        "--report", report,
    )  # fmt: skip
    assert code == 0, err
    assert f"triton\tmodel_dynamic_int8.onnx\t{repo}" in stdout
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")) == [
        "README.md", "sentiment", "sentiment_onnx", "sentiment_tokenizer"
    ]  # fmt: skip
    shipped = out / "model_dynamic_int8.onnx"
    assert (repo / "sentiment_onnx/1/model.onnx").read_bytes() == shipped.read_bytes()

    graph = onnx.load(str(shipped)).graph
    onnx_model = model_config(repo / "sentiment_onnx/config.pbtxt")
    assert onnx_model.backend == "onnxruntime" and onnx_model.max_batch_size == 64
    assert list(onnx_model.dynamic_batching.preferred_batch_size) == [16, 64]
    assert [(i.name, i.data_type) for i in onnx_model.input] == [
        (i.name, model_config_pb2.TYPE_INT64) for i in graph.input
    ]
    assert [list(i.dims) for i in onnx_model.input] == [[128]] * len(graph.input)
    (output,) = onnx_model.output
    assert output.name == graph.output[0].name and list(output.dims) == [2]
    assert output.data_type == model_config_pb2.TYPE_FP32 and output.label_filename == "labels.txt"
    assert (repo / "sentiment_onnx/labels.txt").read_text() == "negative\npositive\n"

    tokenizer = model_config(repo / "sentiment_tokenizer/config.pbtxt")
    assert tokenizer.backend == "python"
    assert [i.data_type for i in tokenizer.input] == [model_config_pb2.TYPE_STRING]
    assert [o.name for o in tokenizer.output] == [i.name for i in graph.input]

    ensemble = model_config(repo / "sentiment/config.pbtxt")
    assert ensemble.platform == "ensemble" and (repo / "sentiment/1").is_dir()
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == ("sentiment_tokenizer", "sentiment_onnx")
    assert dict(first.input_map) == {"TEXT": "TEXT"}
    assert set(first.output_map) == {o.name for o in tokenizer.output}
    assert set(second.input_map) == {i.name for i in onnx_model.input}
    assert set(second.input_map.values()) == set(first.output_map.values())
    assert dict(second.output_map) == {output.name: "LOGITS"}
    assert [o.name for o in ensemble.output] == ["LOGITS"]

    # The fp32 file packaged on its own: the tokenizer model's ids give bench's labels.
    fp32_repo = tmp_path / "triton-fp32"
    code, _, err = run_cli("export", out / "model.onnx", "--triton", fp32_repo)
    assert code == 0, err
    ids = run_tokenizer_model(fp32_repo / "classifier_tokenizer/1/model.py", TEXTS, monkeypatch)
    assert all(a.shape == (len(TEXTS), 128) for a in ids.values())
    session = ort.InferenceSession(str(fp32_repo / "classifier_onnx/1/model.onnx"))
    triton_logits = session.run(None, ids)[0]
    bench_logits = open_model(out / "model.onnx").logits(TEXTS)
    assert np.allclose(triton_logits, bench_logits, atol=1e-4)
    assert len(set(triton_logits.argmax(-1))) == 2  # the labels vary: the check can fail


def test_triton_refuses_what_it_cannot_package(tmp_path, tiny_onnx, run_cli):
    code, _, err = run_cli("export", tmp_path / "missing.onnx", "--triton", tmp_path / "t")
    assert code == 2 and f"edgebert: error: model not found: {tmp_path / 'missing.onnx'}" in err
    code, _, err = run_cli("export", tiny_onnx, "--out", tmp_path / "x")
    assert (
        code == 2
        and "an .onnx MODEL is only packaged: give --triton DIR, --web DIR, --static-shape BATCHxSEQ or --text-input, not --out"
        in err
    )
    code, _, err = run_cli("export", tiny_onnx, "--triton", tmp_path / "t", "--triton-name", "a b")
    assert code == 2 and "--triton-name: 'a b' must be letters, digits, '_' or '-'" in err


STAND_IN_RUN = """
import sys, types, json
import numpy as np
stub = types.ModuleType("triton_python_backend_utils")
class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array
    def as_numpy(self):
        return self.array
stub.Tensor = Tensor
stub.InferenceResponse = lambda output_tensors: {t.name: t.array for t in output_tensors}
stub.get_input_tensor_by_name = lambda request, name: request[name]
sys.modules["triton_python_backend_utils"] = stub
try:
    import bench  # noqa: F401
    sys.exit("edgebert is importable here: the check proves nothing")
except ImportError:
    pass
import importlib.util
spec = importlib.util.spec_from_file_location("model", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.TritonPythonModel()
model.initialize({})
batch = np.array([[t.encode()] for t in json.loads(sys.argv[2])], dtype=object)
out = model.execute([{"TEXT": Tensor("TEXT", batch)}])[0]
print(json.dumps({k: v.tolist() for k, v in out.items()}))
"""


def test_the_tokenizer_model_cleans_without_edgebert_installed(
    tmp_path, varied_model_dir, run_cli, monkeypatch
):
    """A Triton image has no edgebert: the tokenizer model cleans with the copy of
    cleaning.py beside it, in a Python that cannot import edgebert, exactly as edgebert does."""
    import site
    import subprocess

    from bench.cleaning import make_cleaner
    from bench.model_file import write_model_meta
    from bench.tokenizer import FastTokenizer

    model = tmp_path / "model"
    shutil.copytree(varied_model_dir, model)
    steps = ["unescape", "nfkc", "remove_control", "collapse_whitespace", "replace_urls"]
    write_model_meta(model, {"labels": ["negative", "positive"], "clean": steps, "max_length": 32})
    onnx_dir = tmp_path / "onnx"
    code, _, err = run_cli("export", model, "--out", onnx_dir, "--texts", _texts(tmp_path))
    assert code == 0, err
    code, _, err = run_cli("export", onnx_dir / "model.onnx", "--triton", tmp_path / "repo")
    assert code == 0, err
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "pip install tokenizers==" in readme and "edgebert &&" not in readme
    texts = ["Fares &amp; fees\u200b at https://t.co/x   ＡＢＣ", "fine\tflight"]
    env = {"PYTHONPATH": os.pathsep.join(site.getsitepackages()), "PATH": os.environ["PATH"]}
    done = subprocess.run(
        [sys.executable, "-S", "-c", STAND_IN_RUN]
        + [str(tmp_path / "repo" / "classifier_tokenizer/1/model.py"), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ids = json.loads(done.stdout)["input_ids"]
    cleaned = [make_cleaner(steps)(t) for t in texts]
    want = FastTokenizer(onnx_dir)(cleaned, padding="max_length", max_length=32)["input_ids"]
    assert ids == [list(row) for row in want]


def _texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path

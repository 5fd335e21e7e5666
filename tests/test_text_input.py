"""`export --text-input`: the tokenizer and the cleaning steps inside the ONNX graph.

The graph must read every text exactly as Python does (bench.cleaning, then the model's
tokenizer): the same token ids, the same logits, on crafted hostile texts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.cleaning import make_cleaner
from bench.errors import BenchError
from bench.runtime import open_model
from bench.tokenizer import FastTokenizer
from export.errors import ExportError
from export.text_input import text_input_model, text_parity
from tests.conftest import sample_rows

pytest.importorskip("onnxruntime_extensions")

IN_GRAPH = ["strip_html", "remove_control", "collapse_whitespace", "replace_urls", "replace_users"]
CRAFTED = [
    "a gripping, funny and moving film",
    "",
    "   ",
    "<b>bold</b> and<br />broken",
    "tabs\tand\nnew\r\nlines",
    "zero\u200bwidth\u200djoin\u00adsoft\ufeffbom",
    "no\u00a0break\u3000ideographic\u2003em",
    "see https://t.co/x?y=1 and WWW.example.com/a now",
    "@united why? @Delta_2 and mail a@b.com @@x",
    "caf\u00e9 na\u00efve \u00c9COLE r\u00e9sum\u00e9",
    "\uff26\uff55\uff4c\uff4c width \uff11\uff12\uff13",
    "emoji \U0001f600\U0001f44d\U0001f3fd and \u2764\ufe0f",
    "\u4e2d\u6587 mixed \u65e5\u672c\u8a9e",
    "word " * 2000,  # 10,000 characters: cut at the max length
]


def with_cleaning(tiny_onnx: Path, folder: Path, steps: list[str]) -> Path:
    """The tiny ONNX model in its own folder, declaring these cleaning steps."""
    shutil.copytree(tiny_onnx.parent, folder)
    (folder / "edgebert.json").write_text(
        json.dumps({"clean": steps, "max_length": 32, "labels": ["negative", "positive"]})
    )
    return folder / tiny_onnx.name


def graph_ids(text_file: Path, text: str) -> list[int]:
    runner = open_model(text_file)
    return runner.session.run(["input_ids"], {"text": np.array([text], dtype=object)})[0][
        0
    ].tolist()


def test_in_graph_cleaning_and_tokenizer_match_python(tiny_onnx, tmp_path):
    id_file = with_cleaning(tiny_onnx, tmp_path / "m", IN_GRAPH)
    text_file, left = text_input_model(id_file, tmp_path / "m" / "model_text.onnx")
    assert left == []
    clean = make_cleaner(IN_GRAPH)
    tokenizer = FastTokenizer(id_file.parent)
    texts = CRAFTED + [r["text"] for r in sample_rows("validation", 200)]
    for text in texts:
        want = tokenizer([clean(text)], max_length=32)["input_ids"][0]
        assert graph_ids(text_file, text) == want, repr(text[:60])
    got = open_model(text_file).logits(texts)
    want = open_model(id_file).logits([clean(t) for t in texts])
    assert np.abs(got - want).max() < 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


def test_steps_without_an_op_are_refused_or_left_to_the_app(tiny_onnx, tmp_path):
    id_file = with_cleaning(tiny_onnx, tmp_path / "m", ["nfkc", "remove_control"])
    target = tmp_path / "m" / "model_text.onnx"
    with pytest.raises(ExportError, match="cleaning step 'nfkc' has no in-graph op; give --app"):
        text_input_model(id_file, target)
    assert not target.exists()
    lowered = with_cleaning(tiny_onnx, tmp_path / "lower", ["lower"])  # StringLower is not lower()
    with pytest.raises(ExportError, match="cleaning step 'lower' has no in-graph op"):
        text_input_model(lowered, tmp_path / "lower" / "model_text.onnx")
    written, left = text_input_model(id_file, target, app_cleans=True)
    assert left == ["nfkc", "remove_control"]
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(written)).metadata_props}
    assert meta["edgebert.clean_in"] == "app" and json.loads(meta["edgebert.clean"]) == left
    assert json.loads(meta["edgebert.labels"]) == ["negative", "positive"]
    assert meta["edgebert.max_length"] == "32"
    clean, tokenizer = make_cleaner(left), FastTokenizer(id_file.parent)
    for text in CRAFTED:  # the app cleans, the graph tokenizes: ids as Python's
        cleaned = clean(text)
        assert graph_ids(written, cleaned) == tokenizer([cleaned], max_length=32)["input_ids"][0]
    parity = text_parity(id_file, written, [clean(t) for t in CRAFTED])
    assert parity["max_abs_diff"] < 1e-4 and parity["label_agreement"] == 1.0


def test_lone_surrogate_is_one_clear_error(tiny_onnx, tmp_path):
    id_file = with_cleaning(tiny_onnx, tmp_path / "m", [])
    written, _ = text_input_model(id_file, tmp_path / "m" / "model_text.onnx")
    runner = open_model(written)
    assert runner.kind == "onnx-text" and runner.logits(["fine"]).shape == (1, 2)
    with pytest.raises(BenchError, match="not valid Unicode"):
        runner.logits(["bad \ud800 text"])
    assert runner.logits(["still fine"]).shape == (1, 2)  # the session survives


def test_cli_export_predict_and_bench_a_text_in_file(tiny_onnx, tmp_path, run_cli):
    id_file = with_cleaning(tiny_onnx, tmp_path / "m", ["remove_control", "collapse_whitespace"])
    code, out, err = run_cli("export", id_file, "--text-input", "--ort")
    assert code == 0, err
    text_file = id_file.with_name(f"{id_file.stem}_text.onnx")
    assert "text_input\t" in out and "labels agree 100.00%" in err
    mobile = text_file.with_suffix(".ort")
    assert "text_input_ort\t" in out and mobile.is_file()
    texts = ["a gripping film", "dull, dull, dull"]
    np.testing.assert_allclose(
        open_model(mobile).logits(texts), open_model(text_file).logits(texts)
    )
    code, out, err = run_cli("predict", text_file, "a  gripping\tfilm")
    assert code == 0, err
    answer = json.loads(out.splitlines()[0])
    assert answer["label"] in ("negative", "positive")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sample_rows("validation", 40)))
    code, out, err = run_cli(
        "bench",
        f"ids={id_file}",
        f"text={text_file}",
        "--texts",
        data,
        "--batch",
        "1",
        "--seq",
        "16",
        "--min-seconds",
        "0.05",
        "--traffic-batch",
        "0",
        "--out",
        tmp_path / "report",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    kinds = {m["name"]: m["kind"] for m in report["models"]}
    assert kinds == {"ids": "onnx", "text": "onnx-text"}


def test_text_input_refuses_what_it_cannot_read(tiny_onnx, tmp_path, run_cli):
    id_file = with_cleaning(tiny_onnx, tmp_path / "m", ["nfkc"])
    code, _, err = run_cli("export", id_file, "--text-input")
    assert code == 2 and "cleaning step 'nfkc' has no in-graph op" in err
    code, _, err = run_cli("export", id_file, "--app-cleans", "--triton", tmp_path / "t")
    assert code == 2 and "--app-cleans: only with --text-input" in err
    broken = tmp_path / "m" / "broken.onnx"
    broken.write_bytes(b"not onnx")
    code, _, err = run_cli("export", broken, "--text-input", "--app-cleans")
    assert code == 2 and "not a readable ONNX file" in err and "Traceback" not in err


def test_serve_answers_from_a_text_in_file_as_from_its_id_file(tiny_onnx, tmp_path):
    import httpx

    from compress.serving.predict import Predictor
    from tests.servers import server_process

    id_file = with_cleaning(tiny_onnx, tmp_path / "m", ["remove_control", "collapse_whitespace"])
    text_file, _ = text_input_model(id_file, tmp_path / "m" / "model_text.onnx")
    texts = [r["text"] for r in sample_rows("validation", 6)] + [
        "tab\there",
        "caf\u00e9 \U0001f600",
    ]
    expected = Predictor(id_file).predict(texts)
    with server_process(text_file) as (url, _), httpx.Client(base_url=url) as http:
        answer = http.post("/predict", json={"texts": texts}).json()["predictions"]
        assert [a["label"] for a in answer] == [e["label"] for e in expected]
        for got, want in zip(answer, expected, strict=True):
            assert got["probs"] == pytest.approx(want["probs"], abs=1e-5)
        body = json.dumps({"texts": ["fine", "lone \ud800"]})  # ASCII: "\ud800" escaped
        bad = http.post("/predict", content=body, headers={"content-type": "application/json"})
        assert bad.status_code == 422
        assert http.get("/live").status_code == 200


def test_opening_a_text_in_file_does_not_import_the_extensions_package(tiny_onnx, tmp_path):
    """Its __init__ imports transformers (seconds of cold start); ORT needs only the library."""
    import subprocess
    import sys

    id_file = with_cleaning(tiny_onnx, tmp_path / "m", [])
    text_file, _ = text_input_model(id_file, tmp_path / "m" / "model_text.onnx")
    script = (
        "import sys; from bench.runtime import open_model; "
        f"print(open_model({str(text_file)!r}).logits(['fine']).shape, "
        "'onnxruntime_extensions' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(1,", "2)", "False", "False"]


def test_a_file_that_fails_its_check_is_removed_with_the_reason(
    tiny_onnx, tmp_path, run_cli, monkeypatch
):
    """A word glued to an emoji: Python's WordPiece reads it as one [UNK], the op splits it.
    (The tiny model's logits barely move: any difference fails here, none is 0.0 exactly.)"""
    import export.text_input

    monkeypatch.setattr(export.text_input, "MAX_ABS_DIFF", 0.0)
    id_file = with_cleaning(tiny_onnx, tmp_path / "m", [])
    texts = tmp_path / "glued.txt"
    glued = "\u2744\ufe0f"
    texts.write_text("a fine film\n" + "".join(f"great{glued * i} film\n" for i in range(1, 9)))
    code, _, err = run_cli("export", id_file, "--text-input", "--texts", texts)
    assert code == 2 and "the tokenizer op splits 8 of 9 texts" in err, err
    assert "glued to an emoji" in err
    assert not id_file.with_name(f"{id_file.stem}_text.onnx").exists()

"""`edgebert explain`: a tiny model trained where one keyword decides the label gives that
keyword the largest score, by integrated gradients on its PyTorch directory and by occlusion on
its ONNX file (which loads no torch); the HTML page is self-contained."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.conftest import run_ok, tiny_recipe, write_jsonl

FILLER = (
    "the a film movie story plot actor scene music long short old new day night "
    "man woman city house road car book page word time year"
).split()
KEYWORD = "brilliant"  # sub-tokens in the tiny vocabulary: their scores add up per word


def keyword_rows(n: int, seed: int) -> list[dict]:
    """Eight filler words; label 1 exactly when the keyword is among them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=8)
        if i % 2:
            words[rng.randrange(8)] = KEYWORD
        rows.append({"text": " ".join(words), "label": i % 2})
    return rows


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("keyword")
    data = root / "data"
    write_jsonl(data / "train.jsonl", keyword_rows(600, 0))
    write_jsonl(data / "validation.jsonl", keyword_rows(100, 1))
    (data / "labels.json").write_text('["negative", "positive"]')
    recipe = root / "r.yaml"
    recipe.write_text(
        tiny_recipe(tiny_model_dir, data, epochs=3, lr=3e-3)
        + "  - type: export\n    quantize: []\n    optimize: false\n"
    )
    return root, recipe


def test_the_deciding_keyword_gets_the_largest_score(keyword_model, run_cli, tmp_path):
    root, recipe = keyword_model
    run_dir, metrics, _ = run_ok(run_cli, recipe, root / "runs")
    assert metrics["finetune"]["validation"]["accuracy"] >= 0.98
    model_dir = run_dir / "stages" / "00-finetune" / "model"
    onnx_file = run_dir / "stages" / "01-export" / "onnx" / "model.onnx"
    texts = [r["text"] for r in keyword_rows(40, 2) if r["label"] == 1][:10]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    for model, method in ((model_dir, "integrated_gradients"), (onnx_file, "occlusion")):
        page = tmp_path / f"{method}.html"
        code, out, err = run_cli(
            "explain", model, "--file", tmp_path / "texts.txt", "--json", "--html", page
        )
        assert code == 0, err
        results = [json.loads(line) for line in out.splitlines()]
        assert len(results) == 10 and {r["method"] for r in results} == {method}
        for result in results:
            assert result["label"] == "positive"
            top = max(result["words"], key=lambda w: w["score"])
            assert top["word"] == KEYWORD, result
        text = page.read_text()
        assert text.count("<span") == sum(len(r["words"]) for r in results)
        assert "<script" not in text and "http" not in text  # nothing to fetch


def test_explain_on_an_onnx_file_loads_no_torch(tiny_onnx):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['captum'] = None\n"
        "sys.argv = ['edgebert', 'explain', sys.argv[1], 'a fine film', '--json']\n"
        "from compress.cli import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_onnx)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [w["word"] for w in result["words"]] == ["a", "fine", "film"]


def test_explain_refuses_what_it_cannot_do(tiny_onnx, run_cli):
    code, _, err = run_cli("explain", tiny_onnx, "hi", "--method", "integrated_gradients")
    assert code == 2 and "integrated gradients needs a PyTorch model directory" in err
    code, _, err = run_cli("explain", tiny_onnx, "   ")
    assert code == 2 and "the text is empty after cleaning" in err

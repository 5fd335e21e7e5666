"""Bad input anywhere gives one line naming the problem and a non-zero exit, never a traceback.

Each case runs the real CLI entry point in-process; a few also run as a separate process to show
what a user's shell sees.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import tiny_recipe

pytestmark = pytest.mark.fault  # the fault suite (README "Fault suite")

CASES: list[tuple[str, object]] = []


def case(name):
    def register(fn):
        CASES.append((name, fn))
        return fn

    return register


def recipe_with(tmp, text: str) -> list[str]:
    path = tmp["dir"] / "r.yaml"
    path.write_text(text)
    return ["run", str(path), "--out", str(tmp["dir"] / "runs")]


def base(tmp, **training) -> str:
    return tiny_recipe(tmp["model"], tmp["data"], **training)


@case("broken YAML")
def _(t):
    return recipe_with(t, "name: x\nstages: [\n"), "r.yaml:3: broken YAML"


@case("misspelt field gets a suggestion")
def _(t):
    return recipe_with(
        t, base(t).replace("select_best:", "select_bset:")
    ), "r.yaml:13: stages[0].select_bset: unknown field (did you mean 'select_best'?)"


@case("wrong type")
def _(t):
    return recipe_with(
        t, base(t).replace("max_length: 32", "max_length: long")
    ), "r.yaml:8: data.max_length: Input should be a valid integer"


@case("negative lr")
def _(t):
    return recipe_with(
        t, base(t, lr=-0.1)
    ), "r.yaml:12: stages[0].training.lr: Input should be greater than 0"


@case("batch size 0")
def _(t):
    return recipe_with(
        t, base(t, batch_size=0)
    ), "stages[0].training.batch_size: Input should be greater than or equal to 1"


@case("missing data file")
def _(t):
    return recipe_with(
        t, base(t).replace("validation.jsonl", "nothere.jsonl")
    ), f"data file not found: {t['data'] / 'nothere.jsonl'}"


@case("empty data file")
def _(t):
    (t["data"] / "validation.jsonl").write_text("")
    return recipe_with(t, base(t)), f"{t['data'] / 'validation.jsonl'}: no rows"


@case("row with empty text")
def _(t):
    (t["data"] / "train.jsonl").write_text(
        '{"text": "ok", "label": 0}\n{"text": "<p></p>", "label": 1}\n'
    )
    return recipe_with(t, base(t)), "train.jsonl:2: empty text after cleaning"


@case("label outside labels.json")
def _(t):
    (t["data"] / "train.jsonl").write_text('{"text": "ok", "label": "meh"}\n')
    return recipe_with(
        t, base(t)
    ), "train.jsonl:1: unknown label 'meh' (labels: negative, positive)"


@case("mixed label types")
def _(t):
    (t["data"] / "train.jsonl").write_text(
        '{"text": "a", "label": 0}\n{"text": "b", "label": "positive"}\n'
    )
    return recipe_with(t, base(t)), "train.jsonl:2: mixed label types"


@case("non-UTF-8 data file")
def _(t):
    (t["data"] / "train.jsonl").write_bytes(
        b'{"text": "caf\\xe9", "label": 0}\n'.replace(b"\\xe9", b"\xe9")
    )
    return recipe_with(t, base(t)), "train.jsonl: not UTF-8 text"


@case("CSV without a text column")
def _(t):
    (t["data"] / "train.csv").write_text("review,label\nfine,1\n")
    return recipe_with(
        t, base(t).replace("train.jsonl", "train.csv")
    ), "train.csv:1: no 'text' column"


@case("unknown model name")
def _(t):
    return recipe_with(
        t, base(t).replace(str(t["model"]), "bert-gigantic")
    ), "stages[0].model: unknown model 'bert-gigantic'"


@case("model dir without weights")
def _(t):
    empty = t["dir"] / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    return recipe_with(
        t, base(t).replace(str(t["model"]), str(empty))
    ), f"stages[0].model: model directory {empty} has no .safetensors weights"


@case("corrupt safetensors")
def _(t):
    broken = t["dir"] / "broken"
    broken.mkdir()
    for f in t["model"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[: 64 if f.suffix == ".safetensors" else None])
    return ["predict", str(broken), "hello"], f"{broken}: cannot load model"


@case("truncated .onnx for bench")
def _(t):
    bad = t["dir"] / "cut.onnx"
    bad.write_bytes(t["onnx"].read_bytes()[:5000])
    return [
        "bench",
        str(bad),
        "--texts",
        str(t["texts"]),
        "--out",
        str(t["dir"] / "b"),
    ], f"{t['dir'] / 'cut.onnx'}: cannot load"


@case("ONNX with the wrong inputs for bench")
def _(t):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["probs"])],
        "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
    )
    path = t["onnx"].parent / "wrong.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return [
        "bench",
        str(path),
        "--texts",
        str(t["texts"]),
        "--out",
        str(t["dir"] / "b"),
    ], "expected inputs input_ids/attention_mask and output logits, got ['pixels']"


@case("stage order that cannot work (export first)")
def _(t):
    return recipe_with(
        t, f"name: x\ndata: {{train: {t['data'] / 'train.jsonl'}}}\nstages:\n  - type: export\n"
    ), "stages[0].model: '@previous' but no training stage comes before export"


@case("model reference to a stage that does not exist")
def _(t):
    return recipe_with(
        t, base(t).replace(str(t["model"]), "'@teacher'")
    ), "stages[0].model: unknown model reference '@teacher' (models so far: none yet)"


@case("output path not writable")
def _(t):
    blocker = t["dir"] / "a-file"
    blocker.write_text("x")
    path = t["dir"] / "r.yaml"
    path.write_text(base(t))
    return [
        "run",
        str(path),
        "--out",
        str(blocker / "runs"),
    ], f"cannot create run directory {blocker / 'runs'}/tiny-"


@case("existing run dir without --resume/--overwrite")
def _(t):
    existing = t["dir"] / "existing"
    existing.mkdir()
    (existing / "manifest.json").write_text("{}")
    path = t["dir"] / "r.yaml"
    path.write_text(base(t))
    return [
        "run",
        str(path),
        "--run-dir",
        str(existing),
    ], f"run directory {existing} already exists: use --resume"


@case("recipe file missing")
def _(t):
    return ["run", str(t["dir"] / "none.yaml")], f"recipe not found: {t['dir'] / 'none.yaml'}"


@case("unknown stage type")
def _(t):
    return recipe_with(
        t, base(t).replace("type: finetune", "type: distil")
    ), "r.yaml:10: stages[0].type: unknown type 'distil'; expected one of"


@case("unknown cleaning step")
def _(t):
    return recipe_with(
        t, base(t).replace("strip_html", "strip_tags")
    ), "r.yaml:7: data.clean[0]: Input should be"


@case("unknown dataset name")
def _(t):
    return recipe_with(
        t, "name: x\ndata: {dataset: imagenet}\nstages: [{type: finetune, model: minilm-l6}]\n"
    ), "data.dataset: unknown dataset 'imagenet'"


@case("bad --set override")
def _(t):
    path = t["dir"] / "r.yaml"
    path.write_text(base(t))
    return [
        "run",
        str(path),
        "--set",
        "stages.9.training.lr=1",
    ], "--set stages.9.training.lr: '9' does not lead into the recipe"


@case("--set value with a lone surrogate")
def _(t):
    path = t["dir"] / "r.yaml"
    path.write_text(base(t))
    return [
        "run",
        str(path),
        "--set",
        "stages.0.training.lr=\udc80",
    ], "--set stages.0.training.lr: the value is not YAML (unacceptable character #xdc80"


@case("stage name that would escape the run directory")
def _(t):
    return recipe_with(
        t, base(t).replace("type: finetune", "type: finetune\n    name: ../../etc")
    ), "r.yaml:11: stages[0].name: String should match pattern"


@case("predict on an empty string")
def _(t):
    return ["predict", str(t["model"]), ""], "text 1 is empty after cleaning"


@case("predict on a non-UTF-8 file")
def _(t):
    path = t["dir"] / "garbage.txt"
    path.write_bytes(b"\xff\xfe\x00garbage\x81")
    return ["predict", str(t["model"]), "--file", str(path)], "garbage.txt: not UTF-8 text"


@case("bench with an unknown provider")
def _(t):
    return [
        "bench",
        str(t["onnx"]),
        "--provider",
        "tpu",
        "--texts",
        str(t["texts"]),
    ], "unknown provider 'tpu'"


@case("bench on a missing model")
def _(t):
    return [
        "bench",
        str(t["dir"] / "x.onnx"),
        "--texts",
        str(t["texts"]),
    ], f"model not found: {t['dir'] / 'x.onnx'}"


@case("bench with a malformed batch list")
def _(t):
    return [
        "bench",
        str(t["onnx"]),
        "--batch",
        "1,x",
        "--texts",
        str(t["texts"]),
    ], "--batch: expected a comma-separated list"


@case("bench with an unknown runtime setting")
def _(t):
    return [
        "bench",
        str(t["onnx"]),
        "--runtime",
        "turbo=on",
        "--texts",
        str(t["texts"]),
    ], "runtime setting 'turbo=on': expected key=value"


@case("bench variant of a model that is not listed")
def _(t):
    return [
        "bench",
        str(t["onnx"]),
        "--variant",
        "fast=other:threads=1",
        "--texts",
        str(t["texts"]),
    ], "variant 'fast': unknown model 'other'; expected one of"


@case("bench classic baselines without a data set to train them on")
def _(t):
    return ["bench", str(t["onnx"]), "--classic", "tfidf_lr", "--texts", str(t["texts"])], (
        "--classic: give --dataset; its train split trains the baselines"
    )


@case("bench with an unknown classic baseline")
def _(t):
    return ["bench", str(t["onnx"]), "--classic", "svm", "--texts", str(t["texts"])], (
        "classic.0: Input should be 'tfidf_lr', 'tfidf_nb', 'model2vec' or 'fasttext'"
    )


@case("export of a model that is not a sequence classifier")
def _(t):
    encoder = t["dir"] / "encoder"
    encoder.mkdir()
    config = json.loads((t["model"] / "config.json").read_text()) | {
        "architectures": ["BertForMaskedLM"]
    }
    (encoder / "config.json").write_text(json.dumps(config))
    (encoder / "model.safetensors").write_bytes((t["model"] / "model.safetensors").read_bytes())
    return [
        "export",
        str(encoder),
        "--out",
        str(t["dir"] / "e"),
    ], f"{t['dir'] / 'encoder'}: not a sequence or token classifier"


def distill_stage(t, distill: str) -> str:
    return (
        base(t)
        + f"""  - type: train
    name: student
    model: {t["model"]}
    with:
      - distill: {distill}
"""
    )


@case("distillation transfer file missing")
def _(t):
    return recipe_with(
        t, distill_stage(t, "{teacher: '@finetune', transfer: {files: [nothere.jsonl]}}")
    ), "stages[1].with[0].distill.transfer.files[0]: file not found: "


@case("distillation transfer set naming an unknown staged data set")
def _(t):
    return recipe_with(
        t, distill_stage(t, "{teacher: '@finetune', transfer: {datasets: [nope]}}")
    ), "stages[1].with[0].distill.transfer.datasets: unknown dataset 'nope'"


@case("distillation transfer set with no source")
def _(t):
    return recipe_with(
        t, distill_stage(t, "{teacher: '@finetune', transfer: {}}")
    ), "give 'files' or 'datasets' (unlabeled text) and/or 'augment' (copies of train)"


@case("relation distillation from a teacher with an unrelated vocabulary")
def _(t):
    other = t["dir"] / "other-vocab"
    other.mkdir()
    for f in t["model"].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    vocab = (other / "vocab.txt").read_text().splitlines()
    (other / "vocab.txt").write_text("\n".join(vocab[:5] + [w + "x" for w in vocab[5:]]) + "\n")
    (other / "tokenizer.json").unlink()
    distill = f"    with:\n      - distill: {{teacher: {other}, relations: {{weight: 1.0}}}}\n"
    return recipe_with(t, base(t) + distill), "tokens are not in the teacher's vocabulary"


@case("resume of something that is not a run directory")
def _(t):
    return ["run", "--resume", str(t["dir"])], f"{t['dir']}: not a run directory"


@case("a QAT window past the last epoch, at --dry-run")
def _(t):
    args = recipe_with(t, base(t) + "    with:\n      - qat: {start_epoch: 5}\n")
    return args + ["--dry-run"], "with[0].qat.start_epoch: 5 is after the last epoch (2)"


@case("a CSV cell over 131,072 characters")
def _(t):
    data = t["dir"] / "big.csv"
    data.write_text("text,label\n" + '"' + "word " * 30000 + '",positive\nfine,negative\n')
    recipe = base(t).replace(str(t["data"] / "train.jsonl"), str(data))
    return recipe_with(t, recipe), "big.csv:2: a cell is over the CSV limit of 131,072 characters"


@case("a label with a single row when validation is split off")
def _(t):
    rows = [{"text": f"good {i}", "label": "positive"} for i in range(20)]
    rows += [{"text": "bad", "label": "negative"}]
    data = t["dir"] / "one.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = base(t).replace(str(t["data"] / "train.jsonl"), str(data))
    recipe = recipe.replace(f"  validation: {t['data'] / 'validation.jsonl'}\n", "")
    return recipe_with(t, recipe), "label 'negative' has 1 row: a validation split needs 2"


@case("a traffic log line without a label")
def _(t):
    report = t["dir"] / "report.json"
    report.write_text("{}")
    traffic = t["dir"] / "traffic.jsonl"
    traffic.write_text('{"time": "now", "score": 0.9}\n')
    args = ["monitor", str(t["onnx"]), "--reference", str(report), "--traffic", str(traffic)]
    return args, "traffic.jsonl:1: a traffic log line needs 'label' and 'score'"


@case("export --web into the model's own folder")
def _(t):
    return ["export", str(t["onnx"]), "--web", str(t["onnx"].parent)], (
        "--web: write the page into a folder of its own, not the model's"
    )


@case("loadtest of an octal loopback address")
def _(t):
    return ["loadtest", "http://0177.0.0.1:1", "--file", str(t["texts"]), "--seconds", "0.5"], (
        "http://0177.0.0.1:1: no successful answers"
    )


@case("an unknown cleaning step in edgebert.json")
def _(t):
    model = t["dir"] / "model"
    model.mkdir()
    for f in t["model"].iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    (model / "edgebert.json").write_text('{"clean": ["nfkc", "shout"]}')
    return ["predict", str(model), "hello"], "edgebert.json: clean: unknown cleaning step 'shout'"


@case("a JSONL line holding a lone surrogate in predict --file")
def _(t):
    texts = t["dir"] / "texts.jsonl"
    texts.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n')
    return ["predict", str(t["model"]), "--file", str(texts)], (
        "texts.jsonl:2 is not valid Unicode: a lone surrogate at character 5"
    )


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, make, tmp_path, tiny_model_dir, tiny_data, tiny_onnx, run_cli):
    texts = tmp_path / "texts.txt"
    texts.write_text("a fine film\nawful\n")
    args, expected = make(
        {
            "dir": tmp_path,
            "model": tiny_model_dir,
            "data": tiny_data,
            "onnx": tiny_onnx,
            "texts": texts,
        }
    )
    code, out, err = run_cli(*args)
    assert code == 2, (code, err)
    # Exactly one error line; anything before it is the run's own log ("run directory: ...",
    # "[stage] ..."), never a traceback or a warning.
    lines = err.strip().splitlines()
    errors = [line for line in lines if not line.startswith(LOG_LINES)]
    assert len(errors) == 1 and errors == lines[-1:], err
    assert errors[0].startswith("edgebert: error: ") and expected in errors[0], err


LOG_LINES = ("run directory: ", "[")


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["run", "/nonexistent/recipe.yaml"],
            "edgebert: error: recipe not found: /nonexistent/recipe.yaml\n",
        ),
        (
            ["predict", "/nonexistent", "hi"],
            "edgebert: error: model directory not found: /nonexistent\n",
        ),
    ],
)
def test_a_real_process_prints_exactly_one_line(args, expected):
    proc = subprocess.run(
        [sys.executable, "-m", "compress.cli", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr == expected and proc.stdout == ""


def test_predict_survives_odd_text(tiny_model_dir, run_cli):
    long_text = "wonderful " * 5000
    for text in (long_text, "\x00\x01 binary \ufffd garbage \x7f", "mixed 混合 scripts مرحبا 😀"):
        code, out, err = run_cli("predict", tiny_model_dir, text)
        assert code == 0, err
        assert json.loads(out)["label"] in ("negative", "positive")
    code, out, err = run_cli("predict", tiny_model_dir, long_text)
    assert "warning: text 1:" in err and "truncated to" in err

"""Shared fixtures: a tiny random BERT with a real WordPiece tokenizer, and tiny data sets.

Everything is built in a temp folder from a config, so the default suite needs no weights
package and runs in seconds per test.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

TINY_VOCAB = Path(__file__).resolve().parent / "data" / "tiny-vocab.txt"  # WordPiece, 600 tokens
# trained on 3,000 rows of the shipped SST-2 sample (tokenizers BertWordPieceTokenizer, lowercase)
SAMPLE = Path(__file__).resolve().parent.parent / "compress" / "samples" / "sst2-sample"
# Bench arguments for tests: one short shape, one thread, a few hundredths of a second each.
FAST_BENCH = ["--batch", "1", "--seq", "16", "--threads", "1", "--min-seconds", "0.02"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def sample_rows(split: str, n: int, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in (SAMPLE / f"{split}.jsonl").read_text().splitlines()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny classifier exported once to ONNX (tokenizer and config beside it); read-only."""
    from export.onnx_export import export_onnx

    return export_onnx(tiny_model_dir, tmp_path_factory.mktemp("tiny-onnx"))


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT drawn with a wide initialiser (std 0.5): untrained, yet its labels vary
    (about 1 in 5 negative on SST-2 rows) and its logits spread, so agreement and logit-gap
    checks of exported and quantized copies can fail. The default draw (std 0.02) predicts one
    class everywhere with logits that differ by 1e-5."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("varied-bert")
    shutil.copytree(tiny_model_dir, root, dirs_exist_ok=True)
    config = BertConfig.from_pretrained(str(root))
    config.initializer_range = 0.5
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(root), safe_serialization=True)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT classifier with a 600-token WordPiece vocab, saved as safetensors.

    The vocabulary is a committed file: WordPiece training is not deterministic across
    processes, and every test process must see the same tokens (and so the same model)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-bert")
    shutil.copy(TINY_VOCAB, root / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab_file=str(root / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(root), safe_serialization=True)
    tokenizer.save_pretrained(str(root))
    return root


@pytest.fixture()
def tiny_data(tmp_path) -> Path:
    """A folder with train/validation JSONL (400 / 100 SST-2 rows) and labels.json."""
    folder = tmp_path / "data"
    write_jsonl(folder / "train.jsonl", sample_rows("train", 400))
    write_jsonl(folder / "validation.jsonl", sample_rows("validation", 100))
    (folder / "labels.json").write_text('["negative", "positive"]')
    return folder


def integer_dot_products() -> bool:
    """Whether this CPU multiplies int8 exactly (VNNI, AMX, ARM dotprod). Without them (AVX2
    alone) ORT's u8 x s8 kernels saturate, so an INT8 file's labels move away from what fake
    quantization or another runtime computes (bench's `int8_fit`,
    docs/measurements/avx2-emulated)."""
    from bench.machine import machine_info

    return bool(
        set(machine_info()["cpu_flags"]) & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}
    )


def slow_runner(seconds: float) -> str:
    """A `python -c` script running `edgebert ARGS` with each optimiser step `seconds` slower:
    a tiny run that lasts long enough to be killed or stopped in the middle."""
    return textwrap.dedent(
        f"""
        import sys, time, torch
        step = torch.optim.AdamW.step
        def slow(self, *args, **kwargs):
            time.sleep({seconds})
            return step(self, *args, **kwargs)
        torch.optim.AdamW.step = slow
        from compress.cli import main
        sys.argv = ["edgebert"] + sys.argv[1:]
        main()
        """
    )


def tiny_recipe(model_dir: Path, data: Path, **training) -> str:
    settings = {"lr": 5e-4, "batch_size": 16, "epochs": 2, "seed": 1} | training
    return f"""
name: tiny
seed: 7
data:
  train: {data / "train.jsonl"}
  validation: {data / "validation.jsonl"}
  clean: [strip_html, nfkc, collapse_whitespace]
  max_length: 32
stages:
  - type: finetune
    model: {model_dir}
    training: {json.dumps(settings)}
    select_best: macro_f1
"""


def run_ok(run_cli, recipe: Path, out: Path) -> tuple[Path, dict, str]:
    """Run a recipe that must succeed; return (run directory, its metrics.json, stderr)."""
    code, stdout, err = run_cli("run", recipe, "--out", out)
    assert code == 0, err
    run_dir = out / stdout.strip().split("/")[-1]
    return run_dir, json.loads((run_dir / "metrics.json").read_text()), err


@pytest.fixture()
def run_cli(monkeypatch, capsys):
    """Run `edgebert ARGS...` in-process; return (exit code, stdout, stderr)."""
    from compress.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["edgebert", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke

"""`python -m bench`: the benchmark without the training toolkit (no torch needed).

For edge boards and emulated aarch64 roots, where installing PyTorch is slow or impossible:
needs only onnxruntime, tokenizers/transformers, numpy, scipy, scikit-learn, pydantic, rich,
psutil and matplotlib. Texts are taken as given: clean them as training did (`edgebert bench`
does that itself on a full install).

    python -m bench student=model_qat_int8.onnx --data test.jsonl --batch 1,32 --seq 128 --out r
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.options import DEFAULTS, BenchOptions, name_models
from bench.report import write_reports
from bench.runner import run_benchmark
from bench.runtime import read_label_names


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of integers, got '{value}'"
        ) from None


def read_rows(path: Path, label_names: list[str]) -> tuple[list[str], list[int] | None]:
    """JSONL rows {"text", "label"}; labels may be ids or names. No labels: timing only."""
    texts: list[str] = []
    labels: list[int] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            texts.append(str(row["text"]))
        except (ValueError, KeyError, TypeError):
            raise BenchError(
                f"{path}:{number}: expected a JSON object with a 'text' field"
            ) from None
        label = row.get("label")
        if label is not None:
            if isinstance(label, str):
                if label not in label_names:
                    raise BenchError(
                        f"{path}:{number}: unknown label '{label}' (model has {label_names})"
                    )
                label = label_names.index(label)
            labels.append(int(label))
    if not texts:
        raise BenchError(f"{path}: no rows")
    return texts, labels if len(labels) == len(texts) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=PATH or PATH (.onnx or .ort)")
    parser.add_argument("--data", type=Path, required=True, help="JSONL with text (and label)")
    parser.add_argument("--batch", type=_ints, default=DEFAULTS.batch_sizes)
    parser.add_argument("--seq", type=_ints, default=DEFAULTS.seq_lengths)
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads)
    parser.add_argument("--provider", default=DEFAULTS.provider, help="cpu or cuda")
    parser.add_argument(
        "--runtime", default=DEFAULTS.runtime, help="ORT settings, e.g. spinning=off"
    )
    parser.add_argument("--baseline", default=DEFAULTS.baseline)
    parser.add_argument("--min-seconds", type=float, default=DEFAULTS.min_seconds)
    parser.add_argument(
        "--traffic-batch",
        type=int,
        default=DEFAULTS.traffic_batch_size,
        help="batch of the end-to-end pass (0: skip)",
    )
    parser.add_argument(
        "--classic", default="", help="tfidf_lr,tfidf_nb,model2vec,fasttext (needs --train)"
    )
    parser.add_argument("--model2vec-base", type=Path, help="encoder the model2vec row distils")
    parser.add_argument("--train", type=Path, help="JSONL training rows for --classic")
    parser.add_argument("--emulated", action="store_true", help="label timings as emulated")
    parser.add_argument("--out", type=Path, default=Path("bench-report"))
    args = parser.parse_args(argv)
    try:
        models = name_models(args.models)
        options = BenchOptions.parse(
            batch_sizes=args.batch,
            seq_lengths=args.seq,
            threads=args.threads,
            provider=args.provider,
            runtime=args.runtime,
            baseline=args.baseline,
            min_seconds=args.min_seconds,
            classic=[c for c in args.classic.split(",") if c],
            model2vec_base=args.model2vec_base,
            traffic_batch_size=args.traffic_batch or None,
        )
        first = next(iter(models.values()))
        label_names = read_label_names(first if first.is_dir() else first.parent)
        texts, labels = read_rows(args.data, label_names)
        train = read_rows(args.train, label_names) if args.train else None
        report = run_benchmark(
            models, texts, labels, dataset=args.data.name, options=options, train=train
        )
        report.machine.emulated = report.machine.emulated or args.emulated
        paths = write_reports(report, args.out)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(paths["markdown"].read_text(encoding="utf-8"))
    print(f"reports: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

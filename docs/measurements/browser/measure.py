"""Measure a page written by `edgebert export --web` in headless Chromium against ONNX Runtime
in Python, on a labelled split: label agreement, accuracy and macro-F1, in-page latency.

    python docs/measurements/browser/measure.py PAGE_DIR DATASET [--split test] [--out FILE]

PAGE_DIR is the --web folder; its model file (page.json) is also run in Python, batch 1, 1
thread, on the same cleaned texts. The page runs twice: from a plain static server (WebAssembly,
1 thread) and from one that sends COOP/COEP (cross-origin isolated: threads allowed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402
from bench.metrics import classification_metrics  # noqa: E402
from bench.runtime import RuntimeSettings, open_model  # noqa: E402
from compress.cleaning import make_cleaner  # noqa: E402
from compress.data import read_split, resolve_dataset  # noqa: E402
from tests.browser import classify_in_page, open_page, serve_folder  # noqa: E402


def percentiles(values: list[float]) -> dict:
    return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 90, 99)}


def python_reference(model_path: Path, texts: list[str]) -> tuple[np.ndarray, dict]:
    runner = open_model(model_path, settings=RuntimeSettings(threads=1))
    runner.logits(texts[:20], batch_size=1)  # warm-up
    times = []
    logits = np.zeros((len(texts), len(runner.label_names)), dtype=np.float32)
    for i, text in enumerate(texts):
        start = time.perf_counter()
        logits[i] = runner.logits([text], batch_size=1)[0]
        times.append(1000 * (time.perf_counter() - start))
    return logits, percentiles(times)


def browser_run(page_dir: Path, texts: list[str], isolated: bool) -> tuple[dict, list[dict]]:
    with serve_folder(page_dir, isolated=isolated) as url, open_page(url) as page:
        classify_in_page(page, texts[:20])  # warm-up
        return classify_in_page(page, texts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("page", type=Path)
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    page_json = json.loads((args.page / "page.json").read_text())
    meta = json.loads((args.page / "edgebert.json").read_text())
    folder = resolve_dataset(args.dataset)
    rows = read_split(folder / f"{args.split}.jsonl", meta["labels"], make_cleaner(meta["clean"]))
    raw = [json.loads(line)["text"] for line in (folder / f"{args.split}.jsonl").open()]
    reference, python_ms = python_reference(args.page / page_json["model"], rows.texts)
    result = {
        "machine": machine_info(),
        "model": page_json["model"],
        "runtime": page_json["runtime"],
        "rows": len(rows.texts),
        "python_ort_b1_ms": python_ms,
        "python_ort": classification_metrics(
            rows.labels, reference.argmax(-1).tolist(), meta["labels"]
        ),
        "browser": [],
    }
    for isolated in (False, True):
        settings, results = browser_run(args.page, raw, isolated)
        labels = np.array([r["index"] for r in results])
        logits = np.array([r["logits"] for r in results])
        result["browser"].append(
            {
                "settings": settings,
                "label_agreement": float((labels == reference.argmax(-1)).mean()),
                "max_abs_logit_diff": float(np.abs(logits - reference).max()),
                "metrics": classification_metrics(rows.labels, labels.tolist(), meta["labels"]),
                "model_ms": percentiles([r["ms"] for r in results]),
                "total_ms": percentiles([r["total_ms"] for r in results]),
            }
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

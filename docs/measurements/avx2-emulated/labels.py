"""Labels of ONNX files on texts, as this process's CPU computes them: run once natively and
once under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512/VNNI) and compare the two JSON files.

    python labels.py OUT.json rows.jsonl NAME=FILE.onnx ...
    qemu-x86_64 -cpu Haswell .venv/bin/python labels.py OUT-haswell.json rows.jsonl NAME=...
    python labels.py --compare OUT.json OUT-haswell.json
"""

import json
import sys
import time

import numpy as np

from bench.machine import machine_info
from bench.runtime import open_model


def labels(out: str, rows: str, models: list[str]) -> None:
    texts = [json.loads(line)["text"] for line in open(rows, encoding="utf-8")]
    result = {"machine": machine_info(), "models": {}}
    for spec in models:
        name, path = spec.split("=", 1)
        started = time.perf_counter()
        logits = open_model(path, threads=1).logits(texts, 32)
        result["models"][name] = {
            "labels": np.asarray(logits).argmax(-1).tolist(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        json.dump(result, open(out, "w"), indent=1)  # after each model: a slow run keeps each


def compare(native: str, emulated: str) -> None:
    a, b = json.load(open(native)), json.load(open(emulated))
    print(f"native flags {a['machine']['cpu_flags']}; emulated flags {b['machine']['cpu_flags']}")
    for name, row in a["models"].items():
        if name not in b["models"]:
            continue
        x, y = np.array(row["labels"]), np.array(b["models"][name]["labels"])
        print(f"{name}: {int((x == y).sum())}/{len(x)} labels agree ({(x == y).mean():.2%})")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        labels(sys.argv[1], sys.argv[2], sys.argv[3:])

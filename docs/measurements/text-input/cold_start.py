"""Cold start of a text-in file against its id-input file: a fresh process opens the file and
answers one text (the id-input path loads its tokenizer.json; the text-in path registers the
onnxruntime-extensions library). Median of 7 alternating runs, milliseconds.

    python docs/measurements/text-input/cold_start.py ID_FILE.onnx TEXT_FILE.onnx
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

ONE_ANSWER = """
import sys, time
t0 = time.perf_counter()
from bench.runtime import open_model
open_model(sys.argv[1], threads=2).logits(["a gripping, funny and moving film"])
print((time.perf_counter() - t0) * 1000)
"""


def cold_ms(path: str) -> float:
    out = subprocess.run([sys.executable, "-c", ONE_ANSWER, path], capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    ids, text = sys.argv[1], sys.argv[2]
    times: dict[str, list[float]] = {"id_input": [], "text_input": []}
    for _ in range(7):
        times["id_input"].append(cold_ms(ids))
        times["text_input"].append(cold_ms(text))
    print(json.dumps({k: round(statistics.median(v), 1) for k, v in times.items()}, indent=2))

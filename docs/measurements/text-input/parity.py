"""Text-in file vs today's Python path on 2,000 texts (issue: ship it in an app).

    python docs/measurements/text-input/parity.py ID_FILE.onnx TEXT_FILE.onnx

The texts: the 872 SST-2 validation phrases of the packaged sample, then 1,126 crafted from them
(emoji, full-width letters, zero-width characters, accents, upper case, tabs), an empty string
and a 10,000-character text; a lone surrogate is tried on its own. The app's side is Python's
cleaning (the file's edgebert.clean metadata); then both paths read the same cleaned text:
Python through bench.tokenizer and the id-input file, the graph through its own tokenizer op.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench.cleaning import make_cleaner
from bench.errors import BenchError
from bench.runtime import open_model
from bench.tokenizer import FastTokenizer

SAMPLE = Path(__file__).resolve().parents[3] / "compress" / "samples" / "sst2-sample"
FULL_WIDTH = {ord(c): ord(c) + 0xFEE0 for c in "abcdefghijklmnopqrstuvwxyz0123456789"}
CRAFT = [
    lambda t: t + " \U0001f600\U0001f44d\U0001f3fd",
    lambda t: t.translate(FULL_WIDTH),
    lambda t: t.replace(" ", " \u200b", 3).replace("e", "e\u200d", 2),
    lambda t: t.replace("e", "\u00e9").replace("a", "\u00e0"),
    lambda t: t.upper(),
    lambda t: t.replace(" ", "\t", 2) + "\n",
]


def texts() -> list[str]:
    rows = [json.loads(line)["text"] for line in (SAMPLE / "validation.jsonl").open()]
    crafted = [CRAFT[i % len(CRAFT)](rows[i % len(rows)]) for i in range(2000 - len(rows) - 2)]
    return rows + crafted + ["", "a gripping, funny and moving film " * 295]


def main(id_file: Path, text_file: Path) -> dict:
    ids, text = open_model(id_file), open_model(text_file)
    meta = text.session.get_modelmeta().custom_metadata_map
    clean = make_cleaner(json.loads(meta["edgebert.clean"]))
    tokenizer = FastTokenizer(id_file.parent)
    max_length = int(meta["edgebert.max_length"])
    rows = [clean(t) for t in texts()]
    same_ids = 0
    for row in rows:
        graph = text.session.run(["input_ids"], {"text": np.array([row], dtype=object)})[0][0]
        same_ids += graph.tolist() == tokenizer([row], max_length=max_length)["input_ids"][0]
    want, got = ids.logits(rows), text.logits(rows)
    try:
        text.logits(["lone \ud800 surrogate"])
        surrogate = "accepted"
    except BenchError as exc:
        surrogate = f"refused: {exc}"
    return {
        "texts": len(rows),
        "identical_token_ids": same_ids,
        "max_abs_logit_diff": float(np.abs(got - want).max()),
        "label_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
        "longest_text_chars": max(len(t) for t in texts()),
        "lone_surrogate": surrogate,
        "cleaned_by_the_app": json.loads(meta["edgebert.clean"]),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))

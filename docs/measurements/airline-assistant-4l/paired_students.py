"""Paired differences behind README's "validation is less kind than test": the 4-layer student
against the teacher and against the 3-layer student, from the saved fp32 models' predictions in
the committed run metrics. Run from the repository root (reads ../shared/datasets)."""

import json
from pathlib import Path

from bench.paired import paired_difference

HERE = Path(__file__).parent
DATA = Path("../shared/datasets/airline_sentiment")
previous = json.loads((HERE.parent / "airline-assistant" / "metrics.json").read_text())
four = json.loads((HERE / "metrics.json").read_text())["student"]
labels = json.loads((DATA / "labels.json").read_text())

for split in ("validation", "test"):
    rows = [json.loads(line)["label"] for line in (DATA / f"{split}.jsonl").open()]
    truth = [labels.index(v) if isinstance(v, str) else v for v in rows]
    for name, reference in (("teacher", previous["teacher"]), ("3 layers", previous["student"])):
        d = paired_difference(truth, reference[split]["predictions"], four[split]["predictions"], 3)
        low, high = (100 * x for x in d["macro_f1_ci"])
        print(
            f"{split}: 4 layers - {name}: macro-F1 {100 * d['macro_f1_diff']:+.1f} "
            f"(95% CI {low:+.1f} to {high:+.1f}), McNemar p {d['mcnemar_p']:.2f}"
        )

"""Lemmatization and the classic baseline on airline_sentiment: TF-IDF + class-balanced LR
(bench's `tfidf_lr`) trained on the train split, scored on the test split, with the shipped
cleaning steps and the same steps plus `lemmatize:en`; paired bootstrap on the same rows.

    python docs/measurements/lemmatize/classic.py
"""

import json

from bench.classic import classic_pipeline
from bench.metrics import classification_metrics
from bench.paired import paired_difference
from compress.cleaning import make_cleaner
from compress.data import resolve_dataset

STEPS = ["unescape", "nfkc", "remove_control", "replace_urls", "replace_users",
         "collapse_whitespace"]  # fmt: skip


def rows(split: str) -> tuple[list[str], list[int]]:
    lines = (resolve_dataset("airline_sentiment") / f"{split}.jsonl").open(encoding="utf-8")
    data = [json.loads(line) for line in lines]
    return [r["text"] for r in data], [int(r["label"]) for r in data]


train, train_labels = rows("train")
test, test_labels = rows("test")
predictions = {}
for name, steps in (("shipped cleaning", STEPS), ("+ lemmatize:en", [*STEPS, "lemmatize:en"])):
    clean = make_cleaner(steps)
    model = classic_pipeline("tfidf_lr").fit([clean(t) for t in train], train_labels)
    predictions[name] = model.predict([clean(t) for t in test]).tolist()
    scores = classification_metrics(test_labels, predictions[name], ["neg", "neu", "pos"])
    print(f"{name}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}")
a, b = predictions.values()
diff = paired_difference(test_labels, a, b, 3)
print(json.dumps({k: v for k, v in diff.items() if not isinstance(v, list) or len(v) == 2}))

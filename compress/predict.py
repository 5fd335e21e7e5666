"""`edgebert predict`: labels and probabilities for texts, with the model's own cleaning."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from compress.cleaning import make_cleaner
from compress.errors import EdgebertError
from compress.modeling import label_names_of, load_classifier, load_tokenizer, read_meta

MAX_CHARS = 100_000


class Predictor:
    """A saved classifier plus the cleaning and max length it was trained with."""

    def __init__(self, model_dir: Path):
        if not model_dir.is_dir():
            raise EdgebertError(f"model directory not found: {model_dir}")
        meta = read_meta(model_dir)
        self.clean = make_cleaner(meta.get("clean", []))
        self.max_length = int(meta.get("max_length", 128))
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_classifier(model_dir).eval()
        self.labels = label_names_of(self.model)
        self.warnings: list[str] = []

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict]:
        cleaned = []
        for i, text in enumerate(texts):
            text = text[:MAX_CHARS]
            value = self.clean(text)
            if not value.strip():
                raise EdgebertError(f"text {i + 1} is empty after cleaning")
            cleaned.append(value)
        results = []
        for start in range(0, len(cleaned), batch_size):
            chunk = cleaned[start : start + batch_size]
            lengths = self.tokenizer(chunk, truncation=False, verbose=False)["input_ids"]
            for j, ids in enumerate(lengths):
                if len(ids) > self.max_length:
                    self.warnings.append(
                        f"text {start + j + 1}: {len(ids)} tokens, truncated to {self.max_length}"
                    )
            batch = self.tokenizer(
                chunk, truncation=True, max_length=self.max_length, padding=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                probs = self.model(**batch).logits.float().softmax(-1).numpy()
            for text, row in zip(texts[start : start + batch_size], probs):
                best = int(row.argmax())
                results.append(
                    {
                        "text": text,
                        "label": self.labels[best],
                        "score": round(float(row[best]), 6),
                        "probs": {n: round(float(p), 6) for n, p in zip(self.labels, row)},
                    }
                )
        return results


def read_texts(path: Path) -> list[str]:
    """Texts from a .jsonl (field `text`) or a plain file (one text per non-empty line)."""
    if not path.is_file():
        raise EdgebertError(f"file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EdgebertError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise EdgebertError(f"{path}:{number}: expected an object with a 'text' string")
            texts.append(record["text"])
        else:
            texts.append(line)
    if not texts:
        raise EdgebertError(f"{path}: no texts")
    return texts

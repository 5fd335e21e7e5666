"""`edgebert predict`: labels and probabilities for texts, with the model's own cleaning.

Imports neither torch nor scikit-learn: on an .onnx or .ort file it runs on ONNX Runtime alone
(bench's runtime loads torch only for a PyTorch model directory).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.cleaning import make_cleaner
from bench.entities import entity_spans
from bench.files import read_lines
from bench.model_file import read_model_file
from bench.probabilities import softmax
from bench.runtime import open_model
from compress.errors import EdgebertError

MAX_CHARS = 100_000


def check_encodable(text: str, what: str) -> None:
    """A one-line error for a text that is not valid Unicode: a lone surrogate (JSON's
    `"\\ud800"` decodes to one) cannot be encoded, so no tokenizer, log or response can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EdgebertError(
            f"{what} is not valid Unicode: a lone surrogate at character {exc.start + 1}"
        ) from None


class Predictor:
    """A saved classifier (PyTorch directory, .onnx or .ort, through bench's one runtime) plus
    the cleaning and max length it was trained with."""

    def __init__(self, model: Path):
        if not model.exists():
            raise EdgebertError(f"model directory not found: {model}")
        self.runner = open_model(model)
        folder = model if model.is_dir() else model.parent
        self.clean = make_cleaner(read_model_file(folder).clean)
        self.warnings: list[str] = []

    def prepare(self, texts: list[str]) -> list[str]:
        """The texts as the model reads them: each checked (valid Unicode, not empty after the
        model's cleaning) and cleaned. A server calls this when it admits a request, so a text
        the model cannot take fails its own request, never the batch it would have joined."""
        cleaned = []
        for i, text in enumerate(texts):
            check_encodable(text, f"text {i + 1}")
            value = self.clean(text[:MAX_CHARS])
            if not value.strip():
                raise EdgebertError(f"text {i + 1} is empty after cleaning")
            cleaned.append(value)
        return cleaned

    def predict(self, texts: list[str], cleaned: list[str] | None = None) -> list[dict]:
        """A result per text (`cleaned`: what `prepare` made of them, when already done)."""
        if cleaned is None:
            cleaned = self.prepare(texts)
        if self.runner.token_level:
            return self._entities(texts, cleaned)
        limit = self.runner.max_length
        lengths = self.runner.tokenizer(cleaned, truncation=False, verbose=False)["input_ids"]
        self.warnings = [  # this call's only: a server calls predict for ever
            f"text {i + 1}: {len(ids)} tokens, truncated to {limit}"
            for i, ids in enumerate(lengths)
            if len(ids) > limit
        ]
        probs = softmax(self.runner.logits(cleaned))
        labels = self.runner.label_names
        results = []
        for text, row in zip(texts, probs):
            best = int(row.argmax())
            results.append(
                {
                    "text": text,
                    "label": labels[best],
                    "score": round(float(row[best]), 6),
                    "probs": {n: round(float(p), 6) for n, p in zip(labels, row)},
                }
            )
        return results

    def _entities(self, texts: list[str], cleaned: list[str]) -> list[dict]:
        """Token classifier: words split on whitespace, a tag per word, BIO spans as entities."""
        words = [text.split() for text in cleaned]
        names = self.runner.label_names
        results = []
        for text, row, tags in zip(texts, words, self.runner.word_tags(words)):
            tag_names = [names[t] for t in tags]
            spans = sorted(entity_spans(tag_names), key=lambda span: span[1])
            results.append(
                {
                    "text": text,
                    "tags": tag_names,
                    "entities": [
                        {"type": kind, "text": " ".join(row[a:b]), "start_word": a, "end_word": b}
                        for kind, a, b in spans
                    ],
                }
            )
        return results


def read_texts(path: Path) -> list[str]:
    """Texts from a .jsonl (field `text`) or a plain file (one text per non-empty line)."""
    lines = read_lines(path)
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
            check_encodable(record["text"], f"{path}:{number}")
            texts.append(record["text"])
        else:
            texts.append(line)
    if not texts:
        raise EdgebertError(f"{path}: no texts")
    return texts

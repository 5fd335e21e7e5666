"""`edgebert explain`: which words made the model pick its label.

Two methods, one answer format (a score per whitespace word of the cleaned text, positive where
the word pushed towards the predicted label):
- a PyTorch model directory: integrated gradients (`compress.serving.explain_ig`, Captum);
- an .onnx or .ort file: occlusion, each word left out in turn, scored by how much the predicted
  label's probability drops without it. This module imports no torch: it runs on edge boards.
The terminal gets the words coloured by score; `--html` writes a self-contained page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text

from bench.files import write_text_atomic
from bench.probabilities import softmax
from compress.errors import EdgebertError
from compress.serving.predict import Predictor


@dataclass
class Explanation:
    text: str
    label: str
    probability: float
    method: str
    words: list[str]
    scores: list[float]

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "label": self.label,
            "probability": round(self.probability, 4),
            "method": self.method,
            "words": [{"word": w, "score": round(s, 5)} for w, s in zip(self.words, self.scores)],
        }

    def rich(self) -> Text:
        """Words on a background as strong as their share of the largest score: green pushed
        towards the label, red against it."""
        out = Text(f"{self.label} ({self.probability:.2f}): ")
        top = max((abs(s) for s in self.scores), default=0.0) or 1.0
        for word, score in zip(self.words, self.scores):
            level = int(40 + 160 * abs(score) / top)
            colour = f"rgb(0,{level},0)" if score >= 0 else f"rgb({level},0,0)"
            out.append(word, style=f"on {colour}")
            out.append(" ")
        return out

    def html_block(self) -> str:
        top = max((abs(s) for s in self.scores), default=0.0) or 1.0
        spans = " ".join(
            f'<span title="{s:+.4f}" style="background:rgba({"0,160,0" if s >= 0 else "200,0,0"},'
            f'{abs(s) / top:.2f})">{html.escape(w)}</span>'
            for w, s in zip(self.words, self.scores)
        )
        return (
            f"<p><b>{html.escape(self.label)}</b> ({self.probability:.2f}, {self.method}): "
            f"{spans}</p>"
        )


class Occlusion:
    """Each word left out in turn: its score is how much the predicted label's probability
    drops without it. Runs on any runtime bench loads, batched, without torch."""

    name = "occlusion"

    def __init__(self, runner):
        self.runner = runner

    def scores(self, words: list[str], label: int, full: float) -> list[float]:
        if len(words) == 1:
            return [full]
        without = [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
        probs = softmax(self.runner.logits(without))
        return [float(full - p[label]) for p in probs]


def open_explained_model(model: Path) -> Predictor:
    """The model as `predict` opens it (runtime, cleaning), if it is a text classifier."""
    predictor = Predictor(model)
    if predictor.runner.token_level:
        raise EdgebertError(f"{model}: explain is for text classifiers, not token taggers")
    return predictor


def explain_text(predictor: Predictor, scorer, text: str) -> Explanation:
    """The model's label for `text` and each word's score from `scorer` (occlusion or
    integrated gradients: `scores(words, label, probability)`)."""
    runner = predictor.runner
    cleaned = predictor.clean(text)
    words = cleaned.split()
    if not words:
        raise EdgebertError("the text is empty after cleaning")
    probs = softmax(runner.logits([cleaned]))[0]
    best = int(probs.argmax())
    scores = scorer.scores(words, best, float(probs[best]))
    label = runner.label_names[best]
    return Explanation(cleaned, label, float(probs[best]), scorer.name, words, scores)


def write_html(path: Path, explanations: list[Explanation], model: Path) -> None:
    """One self-contained page (inline styles, no scripts or external files)."""
    body = "\n".join(e.html_block() for e in explanations)
    write_text_atomic(
        path,
        f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgebert explain: {html.escape(model.name)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2}}
span{{padding:0.1em 0.2em;border-radius:0.2em}}</style></head>
<body><h1>Why {html.escape(model.name)} chose its labels</h1>
<p>Green pushed towards the predicted label, red against it; hover a word for its score.</p>
{body}
</body></html>
""",
    )

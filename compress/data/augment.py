"""Training-set augmentation: cheap text perturbations that keep the label.

Applied to the training split only (never validation or test), after cleaning, deterministic
for a seed. Each step edits words with some probability; `copies` augmented versions of every
training row are added next to the originals (a copy that came out unchanged is dropped, so
the set never holds exact duplicates made by augmentation).
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from importlib import resources
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from compress.data.splits import Split

WORD = re.compile(r"\w+", re.UNICODE)
KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeleteStep(_Step):
    """Drop each word with probability p (never all of them)."""

    type: Literal["delete"]
    p: float = Field(0.1, gt=0, lt=1)


class SwapStep(_Step):
    """Swap n random pairs of neighbouring words."""

    type: Literal["swap"]
    n: int = Field(1, ge=1, le=10)


class SynonymStep(_Step):
    """Replace each word that has one by a synonym from the shipped list, with probability p."""

    type: Literal["synonym"]
    p: float = Field(0.2, gt=0, le=1)


class TypoStep(_Step):
    """Give each word of 3+ letters a typo (swap, drop, double or keyboard neighbour), prob. p."""

    type: Literal["typo"]
    p: float = Field(0.05, gt=0, lt=1)


AugmentStep = Annotated[
    Union[DeleteStep, SwapStep, SynonymStep, TypoStep], Field(discriminator="type")
]


class AugmentConfig(BaseModel):
    """Recipe block `data.augment`."""

    model_config = ConfigDict(extra="forbid")
    copies: int = Field(1, ge=1, le=10, description="augmented versions added per training row")
    steps: list[AugmentStep] = Field(min_length=1)  # type: ignore[valid-type]


@lru_cache(maxsize=1)
def synonym_table() -> dict[str, tuple[str, ...]]:
    """word -> the other members of its groups, from compress/samples/synonyms.txt."""
    text = resources.files("compress").joinpath("samples/synonyms.txt").read_text(encoding="utf-8")
    table: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        group = [w.strip().lower() for w in line.split(",") if w.strip()]
        for word in group:
            table.setdefault(word, set()).update(w for w in group if w != word)
    return {word: tuple(sorted(others)) for word, others in table.items()}


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbouring letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1 :]
    if kind == 2:  # double a letter
        return word[:i] + word[i] + word[i:]
    for row in KEYBOARD_ROWS:  # hit a neighbouring key
        j = row.find(word[i].lower())
        if j >= 0:
            left = j > 0 and (j == len(row) - 1 or rng.random() < 0.5)
            near = row[j - 1] if left else row[j + 1]
            return word[:i] + near + word[i + 1 :]
    return word


def apply_step(step, text: str, rng: random.Random) -> str:
    words = text.split(" ")
    if isinstance(step, DeleteStep):
        kept = [w for w in words if rng.random() >= step.p]
        return " ".join(kept) if kept else rng.choice(words)
    if isinstance(step, SwapStep):
        for _ in range(step.n if len(words) > 1 else 0):
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    table = synonym_table()

    def replace(match: re.Match) -> str:
        word = match.group(0)
        if isinstance(step, SynonymStep):
            others = table.get(word.lower())
            if others and rng.random() < step.p:
                return _match_case(word, rng.choice(others))
            return word
        if len(word) >= 3 and word.isalpha() and rng.random() < step.p:
            return _typo(word, rng)
        return word

    return WORD.sub(replace, text)


def augment_text(text: str, steps: list, rng: random.Random) -> str:
    for step in steps:
        text = apply_step(step, text, rng)
    return text


def augment_split(split: Split, config: AugmentConfig, seed: int) -> tuple[Split, int]:
    """The split plus its augmented copies (originals first); returns (split, rows added)."""
    rng = random.Random(seed)
    texts, labels = list(split.texts), list(split.labels)
    for _ in range(config.copies):
        for text, label in zip(split.texts, split.labels):
            new = augment_text(text, config.steps, rng)
            if new != text and new.strip():
                texts.append(new)
                labels.append(label)
    return Split(texts, labels, split.source), len(texts) - len(split)

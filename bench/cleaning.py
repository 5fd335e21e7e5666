"""Text cleaning as named, ordered steps that a recipe lists under `data.clean`.

Each step is a plain `str -> str` function so that training, evaluation and `predict` apply the
exact same pipeline (it is saved with the model as `edgebert.json`).

simplemma is imported only when a `lemmatize` step is named: this module is read by every model
file check (`bench.model_file`), `python -m bench` on an edge board and the Triton tokenizer
model, none of which should need it otherwise.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache

_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_USER = re.compile(r"(?<![\w@])@\w+")
_SPACE = re.compile(r"\s+")
# Zero-width and bidi controls survive NFKC and split words invisibly in the tokenizer.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"), None)


def strip_html(text: str) -> str:
    """Drop HTML tags (IMDB keeps `<br />`); a tag becomes a space so words don't glue."""
    return _TAG.sub(" ", text)


def unescape(text: str) -> str:
    """Turn HTML entities (`&amp;`, `&#39;`) into characters; tweets are full of them."""
    return html.unescape(text)


def nfkc(text: str) -> str:
    """Unicode NFKC: full-width forms and ligatures become the characters the vocab knows."""
    return unicodedata.normalize("NFKC", text)


def remove_control(text: str) -> str:
    """Remove control, format and zero-width characters; tabs and newlines become spaces."""
    text = text.translate(_INVISIBLE)
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\t\n\r":
            out.append(" ")
        elif category in ("Cc", "Cf", "Co", "Cs"):
            continue
        else:
            out.append(ch)
    return "".join(out)


def collapse_whitespace(text: str) -> str:
    """One space between words, none at the ends."""
    return _SPACE.sub(" ", text).strip()


def lower(text: str) -> str:
    """Lower-case (only useful with cased vocabularies; uncased tokenizers do it anyway)."""
    return text.lower()


def replace_urls(text: str) -> str:
    """URLs carry no sentiment and waste tokens: replace each with `http`."""
    return _URL.sub("http", text)


def replace_users(text: str) -> str:
    """@mentions become `@user`, as in TweetEval, so a model does not learn airline handles."""
    return _USER.sub("@user", text)


CLEANERS: dict[str, Callable[[str], str]] = {
    f.__name__: f
    for f in (
        strip_html,
        unescape,
        nfkc,
        remove_control,
        collapse_whitespace,
        lower,
        replace_urls,
        replace_users,
    )
}


LEMMATIZE = "lemmatize"  # a step that needs the language: stored as "lemmatize:<code>"
_WORD = re.compile(r"\w+")


@cache
def lemma_languages() -> frozenset[str]:
    """simplemma's languages (their data ships in its wheel)."""
    from simplemma.strategies.dictionaries.dictionary_factory import SUPPORTED_LANGUAGES

    return frozenset(SUPPORTED_LANGUAGES)


def lemmatizer(language: str) -> Callable[[str], str]:
    """Each word replaced by its dictionary form (simplemma, offline: "flights were" -> "flight
    be"); punctuation and spacing stay. For classic models, which see each inflection as another
    feature; a BERT model's sub-words already share them, so it may well lose by it."""
    import simplemma

    def lemmatize(text: str) -> str:
        return _WORD.sub(lambda m: simplemma.lemmatize(m.group(), lang=language), text)

    return lemmatize


def cleaning_step(name: str) -> Callable[[str], str]:
    """The function of a step name, `lemmatize:<language>` included; KeyError if unknown."""
    kind, _, language = name.partition(":")
    if kind == LEMMATIZE and language in lemma_languages():
        return lemmatizer(language)
    return CLEANERS[name]


def make_cleaner(steps: Sequence[str]) -> Callable[[str], str]:
    """Compose the named steps in the order given; unknown names raise KeyError."""
    functions = [cleaning_step(name) for name in steps]

    def clean(text: str) -> str:
        for function in functions:
            text = function(text)
        return text

    return clean

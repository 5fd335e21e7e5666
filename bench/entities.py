"""Entity spans of BIO tag rows: what NER metrics count and what `predict` returns.

A module of its own (plain Python, no scikit-learn) so that predicting with a token classifier
on an edge board does not load the metrics stack.
"""

from __future__ import annotations

from collections.abc import Sequence


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) of each entity in a BIO tag row, as seqeval reads it by default: an
    I- tag that does not continue an entity of its type starts a new one."""
    spans: set[tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and name == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = name, i
    return spans

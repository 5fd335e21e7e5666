"""What network a saved classifier's `config.json` describes, read without importing torch.

Transformer-only steps (layer dropping, pooling heads, attention fusion, QAT, Optimum's
exporter) must step aside for a static-embedding classifier (`bench.static_model`); the command
line and export ask here first, so they stay light to import.
"""

from __future__ import annotations

import json
from pathlib import Path

STATIC_MODEL_TYPE = "edgebert_static"


def saved_config(folder: Path) -> dict:
    """A saved directory's config.json; empty for a directory without a readable one."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def is_static(config) -> bool:
    """True for a static-embedding classifier's config (an object or a parsed config.json)."""
    kind = (
        config.get("model_type")
        if isinstance(config, dict)
        else getattr(config, "model_type", None)
    )
    return kind == STATIC_MODEL_TYPE


def is_token_classifier(config: dict) -> bool:
    """True for a token classifier's parsed config.json (per-token logits, word labels)."""
    return any(a.endswith("ForTokenClassification") for a in config.get("architectures") or [])


def saved_static(folder: Path) -> bool:
    """True when the directory holds a static-embedding classifier."""
    return is_static(saved_config(folder))

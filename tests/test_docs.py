"""The generated references are current: docs/recipes.md and docs/cli.md are what `edgebert
docs` writes from the code today (CI fails on a stale copy: run `edgebert docs docs`)."""

from __future__ import annotations

from pathlib import Path

import typer

from compress.cli import app
from compress.engine.docs import cli_markdown, recipe_markdown
from compress.engine.recipe import recipe_json_schema

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_recipe_reference_is_generated_and_current():
    text = recipe_markdown(recipe_json_schema())
    assert (DOCS / "recipes.md").read_text(encoding="utf-8") == text, "run: edgebert docs docs"
    for field in ("on_bad_rows", "text_field", "grace_seconds", "reduce_range", "max_length"):
        assert f"| `{field}` |" in text


def test_cli_reference_is_generated_and_current():
    text = cli_markdown(typer.main.get_command(app))
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == text, "run: edgebert docs docs"
    assert "## edgebert serve" in text and "| `engine` | `onnxruntime` |" in text
    assert "openvino" in text

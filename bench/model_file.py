"""`edgebert.json`, the contract of a model file: what text it reads and what it answers.

It lies beside a model's weights or ONNX file: the cleaning steps the model was trained with, its
max length, its label names, and whatever else a stage records (quantization, pooling). Every
reader and writer goes through `ModelFile`, so its defaults are declared here once: a model
without the file (not trained by edgebert) reads its text as given, at 128 tokens, and names
its labels from config.json. A damaged file, or one naming a cleaning step this version does not
have, is a one-line error wherever it is opened.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.cleaning import cleaning_step
from bench.errors import BenchError
from bench.files import first_line, write_json_atomic

META_FILE = "edgebert.json"


class ModelFile(BaseModel):
    """The fields every consumer reads; stages may add their own (kept as they are)."""

    model_config = ConfigDict(extra="allow")

    clean: list[str] = Field(
        default_factory=list, description="cleaning steps, in order (none: text as given)"
    )
    max_length: int = Field(128, ge=1, description="tokens per text; longer texts are truncated")
    labels: list[str] | None = Field(None, description="label names in index order")

    @field_validator("clean")
    @classmethod
    def _known_steps(cls, steps: list[str]) -> list[str]:
        for step in steps:
            try:
                cleaning_step(step)
            except KeyError:
                raise ValueError(f"unknown cleaning step '{step}'") from None
        return steps


def read_model_file(folder: Path) -> ModelFile:
    """A model folder's `edgebert.json` (the defaults when there is none)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return ModelFile()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: unreadable ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise BenchError(f"{path}: expected a JSON object")
    try:
        return ModelFile.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise BenchError(f"{path}: {where}: {message}") from None


def read_model_meta(folder: Path) -> dict:
    """`read_model_file` as a plain dict, defaults filled in (what stages extend)."""
    return read_model_file(folder).model_dump(exclude_none=True)


def read_classifier_meta(folder: Path) -> dict:
    """edgebert.json, with the label names from config.json's id2label when it has none: what
    a server or a web page that tokenizes by itself reads."""
    meta = read_model_meta(folder)
    config = Path(folder) / "config.json"
    if not meta.get("labels") and config.is_file():
        id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label") or {}
        meta["labels"] = [id2label[k] for k in sorted(id2label, key=int)]
    return meta


def write_model_meta(folder: Path, meta: dict) -> Path:
    """The one writer of `edgebert.json`: validated first, so no stage writes a file that
    predict or serve would refuse."""
    path = Path(folder) / META_FILE
    try:
        checked = ModelFile.model_validate(meta)
    except ValidationError as exc:
        raise BenchError(f"{path}: {first_line(exc)}") from None
    write_json_atomic(path, checked.model_dump(exclude_none=True))
    return path

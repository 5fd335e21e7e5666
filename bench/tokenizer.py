"""A model's own fast tokenizer (`tokenizer.json`) through the `tokenizers` library alone.

`transformers` wraps this same Rust tokenizer, but importing it loads torch and scikit-learn
whenever they are installed: seconds of cold start for `edgebert predict model.onnx` and a
torch dependency on an edge board. Truncation keeps the special tokens and padding goes to the
right, exactly as `PreTrainedTokenizerFast` drives the same backend (a test compares the two).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bench.errors import BenchError
from bench.files import first_line

TOKENIZER_FILE = "tokenizer.json"


class Encoded(dict):
    """Arrays by input name (`input_ids`, `attention_mask`, `token_type_ids`), plus `word_ids`."""

    def __init__(self, encodings, arrays: dict[str, np.ndarray]):
        super().__init__(arrays)
        self._encodings = encodings

    def word_ids(self, row: int) -> list[int | None]:
        return self._encodings[row].word_ids


class FastTokenizer:
    """Texts (or word lists) -> padded id arrays, with the model folder's tokenizer."""

    def __init__(self, folder: Path):
        try:
            self.backend = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
            raise BenchError(
                f"{folder}: unreadable {TOKENIZER_FILE} ({first_line(exc, 200)})"
            ) from None
        self.pad_token = _pad_token(folder)
        pad_id = self.backend.token_to_id(self.pad_token) if self.pad_token else None
        self.pad_id = 0 if pad_id is None else pad_id

    def __call__(
        self,
        texts: Sequence,
        is_split_into_words: bool = False,
        truncation: bool = True,
        max_length: int | None = None,
        padding: str | bool = False,
        return_tensors: str | None = None,
        verbose: bool = False,
    ):
        backend = self.backend
        if truncation and max_length:
            backend.enable_truncation(max_length)
        else:
            backend.no_truncation()
        if padding:
            length = max_length if padding == "max_length" else None
            backend.enable_padding(
                pad_id=self.pad_id, pad_token=self.pad_token or "[PAD]", length=length
            )
        else:
            backend.no_padding()
        encodings = backend.encode_batch(list(texts), is_pretokenized=is_split_into_words)
        if return_tensors is None:  # lists, as transformers gives them
            return Encoded(
                encodings,
                {
                    "input_ids": [e.ids for e in encodings],
                    "attention_mask": [e.attention_mask for e in encodings],
                    "token_type_ids": [e.type_ids for e in encodings],
                },
            )
        return Encoded(
            encodings,
            {
                "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
            },
        )

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids back to text (special tokens dropped)."""
        return self.backend.decode(list(ids))


def _pad_token(folder: Path) -> str | None:
    """The pad token's text, as `tokenizer_config.json` or `special_tokens_map.json` name it."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            token = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError):
            continue
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            return token
    return None

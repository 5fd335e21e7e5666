"""Training checkpoints that a killed run resumes from, bit for bit.

A checkpoint directory holds:
    model.safetensors   current weights
    best.safetensors    weights of the best epoch so far (when there is one)
    trainer.pt          optimizer, scheduler, RNG states, modifier states (tensors and plain
                        values only: loaded with torch.load(weights_only=True), never pickle code)
    state.json          counters: step, epoch, batches done in the epoch, best score, history
It is written to a temporary directory and swapped in, so a crash or a full disk mid-save leaves
the previous checkpoint intact (and no half-written temporary directory behind).
"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from bench.files import (
    first_line,
    replace_dir_atomic,
    staging_dir,
    write_bytes_atomic,
    write_json_atomic,
)
from compress.errors import EdgebertError


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    internal, version, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _state_dict_for_save(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    best_state: dict | None,
    trainer: dict[str, Any],
    counters: dict[str, Any],
) -> None:
    """Every file goes through `write_bytes_atomic`, so a full disk surfaces as the OS's own
    ENOSPC error (not a library's wrapper of it) and nothing half-written is kept."""
    tmp = staging_dir(directory)
    try:
        write_bytes_atomic(
            tmp / "model.safetensors", safetensors_bytes(_state_dict_for_save(model.state_dict()))
        )
        if best_state is not None:
            write_bytes_atomic(
                tmp / "best.safetensors", safetensors_bytes(_state_dict_for_save(best_state))
            )
        buffer = io.BytesIO()
        torch.save(trainer, buffer)
        write_bytes_atomic(tmp / "trainer.pt", buffer.getvalue())
        write_json_atomic(tmp / "state.json", counters)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir_atomic(tmp, directory)


def load_checkpoint(directory: Path) -> tuple[dict, dict | None, dict, dict]:
    """(model state, best state or None, trainer dict, counters); one-line error if damaged."""
    try:
        counters = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        model_state = load_file(str(directory / "model.safetensors"))
        best = directory / "best.safetensors"
        best_state = load_file(str(best)) if best.is_file() else None
        trainer = torch.load(directory / "trainer.pt", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any damage means the same thing to the user
        raise EdgebertError(
            f"checkpoint {directory} is damaged ({type(exc).__name__}: "
            f"{first_line(exc, 200)}); remove it to restart the stage"
        ) from None
    return model_state, best_state, trainer, counters

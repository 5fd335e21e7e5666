"""What a run was made of: versions, seed, data hashes, git commit and the machine.

Enough to tell, months later, whether two runs are comparable.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

from compress import __version__

PACKAGES = (
    "torch", "transformers", "tokenizers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
    "torch-pruning", "accelerate", "scikit-learn", "numpy", "pydantic",
)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "sve")


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
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """CPU model, core count and the instruction sets that decide INT8 speed."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": None,
        "cpu_flags": [],
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and info["cpu_model"] is None:
                info["cpu_model"] = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                info["cpu_flags"] = [f for f in CPU_FLAGS if f in present]
                break
    except OSError:
        pass
    return info


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

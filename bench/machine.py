"""What machine a number was measured on: CPU model, cores, and the INT8-relevant ISA flags."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# INT8 pays only with integer dot-product instructions: x86 VNNI / AMX, ARM dotprod / SVE.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "sve")


def machine_info() -> dict:
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
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith(("model name", "CPU part")) and info["cpu_model"] is None:
            info["cpu_model"] = line.split(":", 1)[1].strip()
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            info["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in present]
            break
    return info

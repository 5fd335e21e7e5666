"""What machine a number was measured on: CPU model, cores, and the INT8-relevant ISA flags."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

# INT8 pays only with integer dot-product instructions: x86 VNNI / AMX, ARM dotprod / SVE.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "sve")


# INT8 multiply-accumulates per cycle and core, by instruction set (8-bit products per vector
# dot-product instruction x instructions per cycle). Estimates for a roofline, not measurements:
# AVX-512 VNNI: VPDPBUSD zmm = 64 MACs; AMD Zen 4 issues one per cycle (two 256-bit halves),
# Intel server cores with two 512-bit FMA ports two. AVX-VNNI / AVX2 (VPMADDUBSW+VPMADDWD): 32.
# ARM dotprod: SDOT on 128-bit = 16 MACs, two pipes.
_MACS_PER_CYCLE = (
    ("avx512_vnni", "AMD", 64),
    ("avx512_vnni", "", 128),
    ("avx_vnni", "", 64),
    ("avx2", "", 32),
    ("asimddp", "", 32),
)


# The same flags as this process's cpuid shows them (numpy reads cpuid at import).
_CPUID_NAMES = {
    "avx2": "AVX2",
    "avx512f": "AVX512F",
    "avx512_vnni": "AVX512VNNI",
    "avx_vnni": "AVXVNNI",
}


def cpuid_features() -> dict[str, bool]:
    """This process's cpuid as numpy read it ({} when numpy does not say)."""
    umath = getattr(getattr(np, "_core", None), "_multiarray_umath", None)
    return dict(getattr(umath, "__cpu_features__", None) or {})


def _cpuid_hides(flags: list[str]) -> list[str]:
    """Flags /proc/cpuinfo lists that this process's cpuid does not offer. qemu-user shows the
    host's /proc/cpuinfo to an emulated `-cpu Haswell` process, while ONNX Runtime picks its
    kernels from cpuid: the report must say what the runtime saw."""
    features = cpuid_features()
    return [f for f in flags if f in _CPUID_NAMES and features.get(_CPUID_NAMES[f]) is False]


def clock_ghz() -> float | None:
    """The clock the kernel reports (a VM reports its nominal clock; boost may be higher)."""
    try:
        for line in (read_cpuinfo() or "").splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000.0
    except ValueError:
        return None
    return None


def int8_peak_gmacs(info: dict) -> tuple[float, str] | None:
    """(estimated INT8 GMAC/s peak of all cores, how it was computed) or None if unknown."""
    ghz, cores = clock_ghz(), info.get("cpu_count")
    if not ghz or not cores or info.get("emulated"):
        return None
    vendor = info.get("cpu_model") or ""
    for flag, vendor_prefix, per_cycle in _MACS_PER_CYCLE:
        if flag in info.get("cpu_flags", []) and vendor.startswith(vendor_prefix):
            basis = f"{cores} cores x {per_cycle} MACs/cycle ({flag}) x {ghz:.2f} GHz"
            return cores * per_cycle * ghz, basis
    return None


def int8_fit(info: dict) -> str:
    """Which INT8 file fits this CPU. ONNX Runtime multiplies uint8 activations by int8 weights:
    with VNNI (or ARM's dot product) the products are exact; with AVX2 alone it uses VPMADDUBSW,
    whose 16-bit sum of two products saturates, and the QDQ graphs (QAT, static) change labels
    (onnxruntime issues 6004 and 5849; measured in README "AVX2-only x86")."""
    flags = set(info.get("cpu_flags") or [])
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}:
        return "integer dot products: every INT8 file (dynamic, static, QAT) fits"
    if "avx2" in flags:
        return (
            "AVX2 without VNNI: ship the dynamic INT8 file (or static INT8 exported with "
            "calibration.reduce_range); QAT and static QDQ files change labels here"
        )
    if info.get("machine") in ("x86_64", "AMD64"):
        return "no AVX2: INT8 gains little over fp32 here"
    return "no INT8 dot-product flags reported: check INT8 against fp32 here"


def read_cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": None,
        "cpu_flags": [],
    }
    text = read_cpuinfo()
    if text is None:
        return info
    x86_cpuinfo = False
    for line in text.splitlines():
        if line.startswith(("model name", "CPU part")) and info["cpu_model"] is None:
            info["cpu_model"] = line.split(":", 1)[1].strip()
        if line.startswith(("flags", "Features")):
            x86_cpuinfo = line.startswith("flags")
            present = set(line.split(":", 1)[1].split())
            info["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in present]
            break
    hidden = _cpuid_hides(info["cpu_flags"]) if x86_cpuinfo else []
    if hidden and info["machine"] in ("x86_64", "AMD64"):
        info["cpu_model"] = f"x86-64 emulated without {', '.join(hidden)} on {info['cpu_model']}"
        info["cpu_flags"] = [f for f in info["cpu_flags"] if f not in hidden]
        info["emulated"] = True
    if x86_cpuinfo and info["machine"] in ("aarch64", "arm64"):
        # qemu-user shows the host's /proc/cpuinfo to an emulated aarch64 process: the flags
        # and clock there are not this process's, so report the emulation instead of them.
        info["cpu_model"] = f"aarch64 emulated on {info['cpu_model']}"
        info["cpu_flags"] = []
        info["emulated"] = True
    return info

"""The CPU features that decide which kernels a runtime picks (int8 dot products above all).

Standard library only: the benchmark worker imports it (through ``runtime_bench.latency``) in
foreign environments and on remote hosts, and export records it beside parity measured on this
host's CPU, which depends on those kernels (int8 without VNNI saturates, see onnx_format).
"""
from __future__ import annotations

KERNEL_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
                   "asimd", "asimddp", "i8mm", "sve", "sme")
FEATURE_NAMES = {"asimd": "neon", "asimddp": "dotprod"}


def cpu_features(cpuinfo: str | None = None) -> list[str] | None:
    """The kernel-deciding features of this CPU (``/proc/cpuinfo`` ``flags`` on x86, ``Features``
    on Arm), e.g. ``["avx2", "fma", "avx512f", "avx512_vnni"]``; None where they cannot be read."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [FEATURE_NAMES.get(f, f) for f in KERNEL_FEATURES if f in present]
    return None

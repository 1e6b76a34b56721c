"""The CPU features that decide which kernels a runtime picks (int8 dot products above all), and
the peak they allow.

Standard library only: the benchmark worker imports it (through ``runtime_bench.latency``) in
foreign environments and on remote hosts, and export records it beside parity measured on this
host's CPU, which depends on those kernels (int8 without VNNI saturates, see onnx_format).
"""
from __future__ import annotations

KERNEL_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
                   "asimd", "asimddp", "i8mm", "sve", "sme")
FEATURE_NAMES = {"asimd": "neon", "asimddp": "dotprod"}


def _cpuinfo_fields(cpuinfo: str | None) -> dict[str, list[str]] | None:
    """{key: values in order} of ``cpuinfo`` (default: this host's ``/proc/cpuinfo``); None if unreadable."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return None
    fields: dict[str, list[str]] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), []).append(value.strip())
    return fields


def cpu_features(cpuinfo: str | None = None) -> list[str] | None:
    """The kernel-deciding features of this CPU (``/proc/cpuinfo`` ``flags`` on x86, ``Features``
    on Arm), e.g. ``["avx2", "fma", "avx512f", "avx512_vnni"]``; None where they cannot be read."""
    fields = _cpuinfo_fields(cpuinfo) or {}
    listed = fields.get("flags") or fields.get("Features")
    if not listed:
        return None
    present = set(listed[0].split())
    return [FEATURE_NAMES.get(f, f) for f in KERNEL_FEATURES if f in present]


def peak_gmacs(cpuinfo: str | None = None) -> dict | None:
    """Estimated peak multiply-accumulates per core (GMAC/s) of this x86 CPU at its reported clock,
    fp32 and int8, with the basis of the estimate; None where it cannot be made (no clock or no
    x86 vector features in ``/proc/cpuinfo``, e.g. most Arm kernels).

    Per cycle: two FMA pipes × fp32 lanes (16 with AVX-512, 8 with AVX2+FMA; AMD family 25, Zen 3/4,
    runs AVX-512 on 256-bit pipes: 8). int8: four MACs per 32-bit lane with a dot-product
    instruction (AVX-512 VNNI, AVX-VNNI), half that without one (vpmaddubsw + vpmaddwd). AMX
    tiles are not modelled.
    """
    fields = _cpuinfo_fields(cpuinfo)
    if fields is None:
        return None
    try:
        clock_ghz = max(float(mhz) for mhz in fields.get("cpu MHz", [])) / 1000
    except ValueError:
        return None
    flags = set(fields.get("flags", [""])[0].split())
    zen_256 = fields.get("vendor_id", [""])[0] == "AuthenticAMD" and fields.get("cpu family", [""])[0] == "25"
    if "avx512f" in flags and not zen_256:
        lanes, vectors = 16, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, vectors = 8, "AVX-512 on 256-bit pipes" if "avx512f" in flags else "AVX2"
    else:
        return None
    dot = bool({"avx512_vnni", "avx_vnni"} & flags)
    int8_per_lane = 4 if dot else 2
    return {"clock_ghz": round(clock_ghz, 3), "fp32": round(2 * lanes * clock_ghz, 1),
            "int8": round(2 * lanes * int8_per_lane * clock_ghz, 1),
            "basis": f"2 FMA pipes × {lanes} fp32 lanes ({vectors}) at {clock_ghz:.2f} GHz; int8 "
                     f"{int8_per_lane} MACs per lane ({'VNNI dot product' if dot else 'no VNNI'}); AMX not modelled"}

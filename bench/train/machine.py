"""What every throughput benchmark records beside its figures: the machine, its load and a peak FLOP/s estimate."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# FP32 FLOPs per cycle per core: 2 FMA pipes x lanes x 2 (multiply + add). Zen 4 runs AVX-512 as 2 x 256-bit.
FLOPS_PER_CYCLE = {"avx512_zen4": 32, "avx512": 64, "avx2": 32}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, torch build and thread count (the benchmark's 'device')."""
    import torch

    info = _cpuinfo()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"name": f"{info.get('model name', platform.processor())} (family {info.get('cpu family', '?')}, "
                    f"model {info.get('model', '?')}), {os.cpu_count()} cores, CPU only",
            "cpu_mhz": float(info.get("cpu MHz", 0) or 0), "cpu_count": os.cpu_count(),
            "memory_gib": round(mem_gib, 1), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "python": platform.python_version()}


def peak_fp32_gflops() -> tuple[float, str]:
    """An FP32 peak for the CPU from /proc/cpuinfo (cores x clock x FLOPs/cycle) and how it was derived."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    mhz = float(info.get("cpu MHz", 0) or 0)
    zen4 = info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25" and "avx512f" in flags
    kind = "avx512_zen4" if zen4 else "avx512" if "avx512f" in flags else "avx2" if "fma" in flags else ""
    if not kind or not mhz:
        return 0.0, "unknown CPU: pass --peak-gflops for an MFU"
    per_cycle = FLOPS_PER_CYCLE[kind]
    cores = os.cpu_count() or 1
    peak = cores * mhz / 1000 * per_cycle
    return round(peak, 1), (f"assumed FP32 peak = {cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle "
                            f"({kind}: 2 FMA pipes); turbo and SMT ignored")


def load_average() -> list[float]:
    """The 1/5/15-minute load averages (the machine is shared: this says how busy it was)."""
    return [round(x, 2) for x in os.getloadavg()]


def write_result(result: dict[str, Any], out: Path) -> None:
    """Print the JSON and save it to ``out``."""
    text = json.dumps(result, indent=1, default=str)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    log.info("wrote %s", out)

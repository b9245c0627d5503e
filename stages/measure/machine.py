"""This machine and its software stack, described deterministically, and its fingerprint.

`describe_host` must stay deterministic on one machine (no measured, time- or load-dependent
values): its fingerprint decides whether cached benchmark timings are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from typing import Any

import onnxruntime as ort
import psutil

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
LIBRARIES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "torch",
    "dvc",
    "hydra-core",
    "mlflow",
    "scikit-learn",
    "scipy",
)


def _cpuinfo() -> dict[str, str]:
    """First processor's fields from /proc/cpuinfo; empty where unavailable (non-Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break  # end of the first processor block
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def library_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_host() -> dict[str, Any]:
    """Deterministic description of this machine and software stack (nothing measured)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu_model": info.get("model name") or platform.processor(),
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "isa_flags": {flag: flag in flags for flag in ISA_FLAGS},
        "memory_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": {"system": platform.system(), "release": platform.release()},
        "python": platform.python_version(),
        "libraries": {name: library_version(name) for name in LIBRARIES},
        "ort_providers": list(ort.get_available_providers()),
    }


def fingerprint(description: dict[str, Any]) -> str:
    """First 16 hex chars of the sha256 of the canonical (sorted-key) JSON of `description`."""
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

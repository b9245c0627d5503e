"""Stage `host`: validate params, check the target, and fingerprint this machine.

Always re-run by DVC, so bad params stop the pipeline here, before anything is removed or
recomputed. It writes the machine's full description and two keys cut from it, and each stage
depends only on the key that can change its outputs:

- the numerics key (the libraries that compute, and the CPU features that choose their kernels):
  `prepare`, `baseline`, `optimize`, `reference` and `validate`;
- the timing key (CPU model, cores, the target's threads, the runtime that is timed): `peak` and
  `benchmark`, and `report`, which quotes both.

An upgrade of MLflow or DVC, a new kernel release or more RAM changes the description only, and
nothing re-runs; new timing hardware re-runs only the timing stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages import params as config
from stages.cli import run
from stages.measure.machine import describe_host, fingerprint, library_version
from stages.runtime import check_target_runs, threads
from stages.storage import write_json

# Packages whose versions can change a computed array: data preparation (tokenizer), training,
# export, quantization, inference, and the statistics in the evidence.
NUMERICS_LIBRARIES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "torch",
    "scikit-learn",
    "scipy",
    "statsmodels",
    "transformers",
    "tokenizers",
    "safetensors",
)


def numerics_key(description: dict[str, Any], libraries: dict[str, str]) -> dict[str, Any]:
    """What can change a computed array on this machine, with its fingerprint."""
    key = {
        "architecture": description["architecture"],
        "isa_flags": description["isa_flags"],
        "libraries": libraries,
    }
    return {"fingerprint": fingerprint(key), **key}


def timing_key(description: dict[str, Any], target: config.Target) -> dict[str, Any]:
    """What can change a timing on this machine, with its fingerprint."""
    key = {
        "cpu_model": description["cpu_model"],
        "architecture": description["architecture"],
        "logical_cores": description["logical_cores"],
        "physical_cores": description["physical_cores"],
        "isa_flags": description["isa_flags"],
        "onnxruntime": description["libraries"]["onnxruntime"],
        "target": {"provider": target.provider, "intra_op_threads": threads(target)},
    }
    return {"fingerprint": fingerprint(key), **key}


def main() -> None:
    p = config.load()
    check_target_runs(p.target)  # a test session on the provider, not only its listing
    description = describe_host()
    numerics = numerics_key(
        description, {name: library_version(name) for name in NUMERICS_LIBRARIES}
    )
    timing = timing_key(description, p.target)
    write_json(Path(p.paths.host_numerics), numerics)
    write_json(Path(p.paths.host_timing), timing)
    write_json(Path(p.paths.host), {"fingerprint": fingerprint(description), **description})
    print(
        f"host {fingerprint(description)}: {description['cpu_model']}; numerics key "
        f"{numerics['fingerprint']}, timing key {timing['fingerprint']}"
    )


if __name__ == "__main__":
    run(main)

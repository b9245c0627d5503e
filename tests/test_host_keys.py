"""The machine's two keys: each stage re-runs only for what can change its outputs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from stages import params as config
from stages.host import numerics_key, timing_key

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTION: dict[str, Any] = {
    "cpu_model": "AMD EPYC",
    "architecture": "x86_64",
    "logical_cores": 2,
    "physical_cores": 2,
    "isa_flags": {"avx2": True, "avx512f": False},
    "memory_total_gib": 23.5,
    "os": {"system": "Linux", "release": "6.1.0"},
    "python": "3.11.7",
    "libraries": {"onnxruntime": "1.32.0", "mlflow": "3.17.2", "dvc": "3.67.1"},
    "ort_providers": ["CPUExecutionProvider"],
}
LIBRARIES = {"numpy": "2.4.6", "onnxruntime": "1.32.0", "torch": "2.13.0+cpu"}
TARGET = config.Target(intra_op_threads=2)


def keys(description: dict[str, Any], libraries: dict[str, str] = LIBRARIES) -> tuple[str, str]:
    return (
        numerics_key(description, libraries)["fingerprint"],
        timing_key(description, TARGET)["fingerprint"],
    )


def changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(DESCRIPTION)
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return d


def test_what_neither_computes_nor_times_changes_no_key() -> None:
    same = keys(DESCRIPTION)
    for path, value in [
        (("os", "release"), "6.18.44"),
        (("memory_total_gib",), 64.0),
        (("libraries", "mlflow"), "4.0.0"),
        (("libraries", "dvc"), "4.0.0"),
        (("python",), "3.11.9"),
        (("ort_providers",), ["AzureExecutionProvider", "CPUExecutionProvider"]),
    ]:
        assert keys(changed(path, value)) == same, path


def test_a_computing_library_changes_the_numerics_key_only() -> None:
    numerics, timing = keys(DESCRIPTION)
    new_numerics, new_timing = keys(DESCRIPTION, {**LIBRARIES, "torch": "2.14.0+cpu"})
    assert new_numerics != numerics and new_timing == timing


def test_timing_hardware_changes_the_timing_key_only() -> None:
    numerics, timing = keys(DESCRIPTION)
    for path, value in [(("cpu_model",), "Intel Xeon"), (("logical_cores",), 4)]:
        new_numerics, new_timing = keys(changed(path, value))
        assert new_numerics == numerics and new_timing != timing, path
    more_threads = timing_key(DESCRIPTION, config.Target(intra_op_threads=4))["fingerprint"]
    assert more_threads != timing


def test_cpu_features_and_the_runtime_change_both_keys() -> None:
    numerics, timing = keys(DESCRIPTION)
    flags = keys(changed(("isa_flags", "avx512f"), True))
    assert flags[0] != numerics and flags[1] != timing
    runtime = keys(
        changed(("libraries", "onnxruntime"), "1.33.0"), {**LIBRARIES, "onnxruntime": "1.33.0"}
    )
    assert runtime[0] != numerics and runtime[1] != timing


def test_each_stage_depends_on_its_key_and_none_on_the_description() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def deps(name: str) -> set[str]:
        stage = stages[name].get("do", stages[name])
        return {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}

    numerics, timing, full = "${paths.host_numerics}", "${paths.host_timing}", "${paths.host}"
    for name in ("prepare", "baseline", "optimize", "reference", "validate"):
        assert numerics in deps(name) and timing not in deps(name), name
    for name in ("peak", "benchmark"):
        assert timing in deps(name) and numerics not in deps(name), name
    assert {numerics, timing} <= deps("report")
    assert all(full not in deps(name) for name in stages if name != "host")

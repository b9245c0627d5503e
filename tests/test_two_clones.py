"""Two clones of one commit, in folders of different names and depths, run `dvc repro` on the
digits model: data, models and every figure that is not a timing come out byte-identical, and no
output names either folder. Then the machine is faked in one clone (a `sitecustomize` on
PYTHONPATH patches what `host` reads, no hook in the stages) to show what re-runs: a new kernel
release re-runs nothing but `host`; a new core count (the timing key) re-runs only the timing
stages; a new numerics key re-runs what computes, not `peak` or `benchmark`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_worktree
from test_e2e import BENCH, DIGITS, digest, dvc, load, ran_stages, run

pytestmark = pytest.mark.slow

TECHNIQUES = ["int8_dynamic", "int8_static", "fp16", "prune_channels", "distill"]
SHRINK = [*DIGITS, f"technique=[{','.join(TECHNIQUES)}]", *BENCH]
SAME_BYTES = [
    "data/**/*",
    "models/**/*",
    "reports/reference/**/*",
    "reports/validation/**/*",
    "reports/failures/**/*",
]
TEXT_OUTPUTS = [
    "dvc.lock",
    "params.yaml",
    "reports/**/*.json",
    "reports/**/*.md",
    "reports/**/*.csv",
]
FAKE = """\
import os, platform
fake = os.environ.get("WORKBENCH_TEST_FAKE", "")
if fake == "release":
    platform.release = lambda: "0.0.0-another-kernel"
elif fake == "cores":
    os.cpu_count = lambda: 64
"""


def outputs(repo: Path) -> dict[str, Any]:
    """Every output file's sha256, manifests included: wall-clock figures (e.g. distill's
    training seconds) live in reports/optimize/, never in a model folder."""
    return dict(digest(repo, SAME_BYTES))


def benchmark_facts(repo: Path, name: str) -> dict[str, Any]:
    """What a benchmark records that is not a timing: sizes, inputs, arithmetic per call."""
    b = load(repo, f"reports/benchmark/{name}/benchmark.json")
    return {
        "status": b["status"],
        "size_bytes": b.get("size_bytes"),
        "inputs": b.get("inputs"),
        "flops": [
            {side: c["flops"] for side, c in run_["compute"].items()}
            for run_ in b.get("batches", [])
        ],
    }


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first = copy_worktree(tmp_path_factory.mktemp("team") / "workbench")
    second = copy_worktree(tmp_path_factory.mktemp("mate") / "deeper" / "bench-copy")
    for repo in (first, second):
        run(repo, "git", "init", "-q")
        run(repo, sys.executable, "-m", "stages.compose", *SHRINK)
        run(repo, "git", "add", "-A")
        run(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
        dvc(repo, "repro")
    return first, second


def test_two_clones_give_identical_data_models_and_evidence(clones: tuple[Path, Path]) -> None:
    first, second = clones
    a, b = outputs(first), outputs(second)
    assert "models/baseline/model.onnx" in a and len(a) > 40
    differ = sorted(f for f in a.keys() | b.keys() if a.get(f) != b.get(f))
    assert differ == [], f"outputs that differ between the clones: {differ}"
    for name in TECHNIQUES:
        assert benchmark_facts(first, name) == benchmark_facts(second, name), name


def test_no_output_names_the_folder_it_was_made_in(clones: tuple[Path, Path]) -> None:
    for repo in clones:
        for pattern in TEXT_OUTPUTS:
            for f in repo.glob(pattern):
                text = f.read_text(errors="replace")
                assert str(repo) not in text and str(repo.parent) not in text, f


def test_a_new_kernel_release_reruns_only_the_host_check(
    clones: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = clones
    (tmp_path / "sitecustomize.py").write_text(FAKE)
    env = {"PYTHONPATH": str(tmp_path), "WORKBENCH_TEST_FAKE": "release"}
    out = dvc(first, "repro", env=env).stdout
    release = load(first, "reports/host.json")["os"]["release"]
    assert release == "0.0.0-another-kernel"  # the fake reached `host`
    assert ran_stages(out) == ["host"], out


def test_a_new_timing_key_reruns_only_the_timing_stages(
    clones: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = clones
    before = outputs(first)
    numerics = (first / "reports/host/numerics.json").read_bytes()
    (tmp_path / "sitecustomize.py").write_text(FAKE)
    env = {"PYTHONPATH": str(tmp_path), "WORKBENCH_TEST_FAKE": "cores"}
    ran = ran_stages(dvc(first, "repro", env=env).stdout)
    timing = load(first, "reports/host/timing.json")
    assert timing["logical_cores"] == 64  # the fake reached `host`
    assert (first / "reports/host/numerics.json").read_bytes() == numerics
    expected = {"host", "peak", "report", *(f"benchmark@{t}" for t in TECHNIQUES)}
    assert set(ran) == expected, ran
    assert outputs(first) == before  # data, models and validation were reused as they were


def test_a_new_numerics_key_reruns_what_computes_but_not_the_timing_stages(
    clones: tuple[Path, Path],
) -> None:
    first, _ = clones
    key = first / "reports/host/numerics.json"
    numerics = json.loads(key.read_text())
    key.write_text(json.dumps({**numerics, "libraries": {**numerics["libraries"], "torch": "9"}}))
    status = json.loads(dvc(first, "status", "--json").stdout)
    changed = {name for name, why in status.items() if name != "host" and why}
    per_technique = {f"{s}@{t}" for s in ("optimize", "validate") for t in TECHNIQUES}
    computes = {"prepare", "baseline", "control", "reference", "report", *per_technique}
    assert changed == computes, changed

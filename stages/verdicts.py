"""Do the verdicts hold from one run to the next? A benchmark, not a test.

`python -m stages.verdicts --runs 3` (`make verdicts`) times every selected candidate again, N
times, from the same models, data and validation evidence, and judges each run with the report
stage's own rules: it prints each candidate's verdict and batch-1 p50 speedup per run, and how
many candidates flipped. Each run works in a scratch copy of the repository (models and data
linked, reports copied), so the committed evidence and the MLflow store are left as they are.
Run it alone on the machine: anything running beside it widens the intervals it checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from stages import params as config
from stages.cli import run

# linked into the scratch copy, never written there: the runs re-time these, they do not rebuild
LINKED = ("data", "models")
SKIPPED = {".git", ".venv", ".dvc", "mlflow.db", "mlruns", "dvc_plots", ".mlflow-server"}


def scratch_copy(root: Path, dest: Path) -> Path:
    """The repository's files in `dest`: data and models linked, everything else copied (the
    reports a run rewrites among them); no git, DVC cache, venv or MLflow store."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(root.iterdir()):
        if entry.name in SKIPPED:
            continue
        target = dest / entry.name
        if entry.name in LINKED:
            target.symlink_to(entry.resolve(), target_is_directory=True)
        elif entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target)
    return dest


def one_run(root: Path, techniques: list[str], work: Path) -> dict[str, dict[str, Any]]:
    """Every candidate timed again and judged in a scratch copy under `work`: per technique
    its verdict and its batch-1 p50 speedup interval (None where it has no benchmark)."""
    copy = scratch_copy(root, work)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{copy / 'mlflow.db'}"}
    env["DVC_ROOT"] = str(copy)
    for t in techniques:
        print(f"verdicts: timing {t}", flush=True)
        subprocess.run([sys.executable, "-m", "stages.benchmark", t], cwd=copy, env=env, check=True)
    subprocess.run([sys.executable, "-m", "stages.report"], cwd=copy, env=env, check=True)
    summary = json.loads((copy / "reports/summary.json").read_text())
    out = {}
    for t in techniques:
        bench = copy / "reports/benchmark" / t / "benchmark.json"
        p50 = None
        if bench.is_file():
            batches = json.loads(bench.read_text()).get("batches") or []
            p50 = batches[0]["speedup"]["p50"] if batches else None
        out[t] = {"verdict": summary["candidates"][t]["verdict"], "p50": p50}
    return out


def table(runs: list[dict[str, dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """The Markdown table of verdicts per run (with each run's p50 interval), and the
    candidates whose verdict was not the same in every run."""
    names = list(runs[0])
    head = "| candidate | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | same |"
    lines = [head, "|---|" + "---|" * len(runs) + "---|"]
    flipped = []
    for name in names:
        cells = []
        for r in runs:
            v, p50 = r[name]["verdict"], r[name]["p50"]
            shown = f" {p50['estimate']:.3f} [{p50['low']:.3f}, {p50['high']:.3f}]" if p50 else ""
            cells.append(f"{v}{shown}")
        same = len({r[name]["verdict"] for r in runs}) == 1
        if not same:
            flipped.append(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'yes' if same else '**no**'} |")
    return lines, flipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="timings of every candidate (>= 2)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.runs < 2:
        raise config.ParamsError(f"--runs = {args.runs} is not allowed; expected >= 2")
    p = config.load()
    root = Path.cwd().resolve()
    techniques = list(p.technique)
    runs = []
    with tempfile.TemporaryDirectory(prefix="verdicts.") as tmp:
        for i in range(args.runs):
            print(f"verdicts: run {i + 1} of {args.runs}", flush=True)
            runs.append(one_run(root, techniques, Path(tmp) / f"run{i + 1}"))
    lines, flipped = table(runs)
    lines.append("")
    lines.append(
        f"{len(flipped)} of {len(techniques)} candidates flipped over {args.runs} runs"
        + (f": {', '.join(flipped)}" if flipped else "")
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    run(main)

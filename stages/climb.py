"""The climb: rung after rung, every selected candidate against the current control; the SHIP
candidate with the best lower bound of its p50 speedup becomes the next rung's control.

`python -m stages.climb --rungs 3 --max-minutes 120` (`make climb ARGS='--rungs 3'`). Rung 0 is
the current evidence, so `dvc status` must be clean first (run `dvc repro`). Each further rung is
a DVC experiment, `dvc exp run -S 'technique@control=[...]'` (plus `-S control.<t>.<option>=...`
for any option the promoted candidate shipped with that differs from its conf/ default), so
`dvc exp show` lists the rungs and the command in `reports/ladder.md` reproduces any of them.
The climb stops when nothing ships, after `--rungs` rungs, or when the next rung would not fit in
`--max-minutes` (at the last rung's pace). After each rung its review notes, dashboard, plot and
the figures the ladder reads are copied to `reports/ladder/rung-<k>/`; at the end the workspace
is put back to the commit's control (`git checkout` of params.yaml, dvc.lock and the evidence,
then `dvc checkout`), and `reports/ladder.md` and `reports/ladder.png` are written.

The climb promotes within experiments only: the team's sign-off on a rung stays `make promote`,
an ordinary commit (its command is in the ladder's table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from stages import params as config
from stages.cli import run
from stages.compose import compose_text
from stages.errors import ParamsError
from stages.ladder import ladder_md, ladder_png, rung_record
from stages.promote import dvc_clean
from stages.storage import read_json, write_bytes, write_json, write_text

RUNG_FILES = ("dashboard", "tradeoff", "summary")  # paths.* copied beside each rung's notes
RESTORED = ("params.yaml", "dvc.lock", "reports")  # put back to the commit after the climb


def flat(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, dict) and v:
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def overrides(stack: dict[str, dict[str, Any]], conf: Path = Path("conf")) -> list[str]:
    """The `-S` overrides that make params.yaml's control this stack: the defaults entry, then
    every option whose shipped value differs from what conf/ composes for it."""
    entry = f"technique@control=[{','.join(stack)}]"
    composed = yaml.safe_load(compose_text([entry], conf=conf)).get("control") or {}
    out = [entry]
    for name, options in stack.items():
        default = flat(composed.get(name) or {})
        for key, value in flat(options).items():
            if key not in default or default[key] != value:
                out.append(f"control.{name}.{key}={json.dumps(value)}")
    return out


def best_ship(summary: dict[str, Any]) -> str | None:
    """The SHIP candidate with the highest lower bound of its p50 speedup at batch 1 (None when
    nothing ships); ties go to the first in the technique list."""
    ships = [
        (c["metrics"].get("speedup_p50_b1_low", 0.0), -i, name)
        for i, (name, c) in enumerate(summary["candidates"].items())
        if c["verdict"] == "SHIP"
    ]
    return max(ships)[2] if ships else None


def choose(record: dict[str, Any], p: config.Params) -> None:
    """The rung's choice: the best SHIP (`promoted`), or why the climb stops here."""
    best = best_ship(read_json(Path(p.paths.summary), "report"))
    if best is None:
        record["stopped"] = "nothing ships against this control"
    else:
        record["promoted"] = best


def save_rung(p: config.Params, k: int, folder: Path) -> dict[str, Any]:
    """Copy the rung's notes and dashboard to `folder`; the figures the ladder reads (written
    to `folder/rung.json` once the climb ends, with the rung's choice and minutes)."""
    shutil.copytree(p.paths.review, folder / "review")
    for key in RUNG_FILES:
        src = Path(getattr(p.paths, key))
        shutil.copyfile(src, folder / src.name)
    return rung_record(p, k)


def exp_run(name: str, args: list[str]) -> None:
    """One rung as a DVC experiment in the workspace (an older one of the same name replaced)."""
    subprocess.run(["dvc", "exp", "remove", name], capture_output=True)  # absent: fine
    cmd = ["dvc", "exp", "run", "--name", name]
    for a in args:
        cmd += ["-S", a]
    print("$ " + " ".join(cmd[:5] + [f"-S '{a}'" for a in args]), flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise ParamsError(f"rung {name} failed (`dvc exp run` exit {done.returncode}); see above")


def restore() -> None:
    """The workspace back to the commit's control and evidence."""
    subprocess.run(["git", "checkout", "HEAD", "--", *RESTORED], check=True)
    subprocess.run(["dvc", "checkout", "--quiet"], check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rungs", type=int, default=3, help="rungs to climb beyond rung 0")
    parser.add_argument("--max-minutes", type=float, default=150.0, help="the time box")
    args = parser.parse_args(argv)
    if args.rungs < 1:
        raise ParamsError(f"--rungs must be at least 1; got {args.rungs}")
    stale = dvc_clean()
    if stale:
        raise ParamsError(
            f"rung 0 is the current evidence, and it is not current ({stale}): "
            "run `dvc repro` first"
        )
    p = config.load()
    folder = Path(p.paths.ladder)
    work = Path(tempfile.mkdtemp(prefix="ladder-"))  # the rungs' copies, until the restore
    stack: dict[str, dict[str, Any]] = {k: config.as_dict(v) for k, v in p.control.items()}
    rungs = [save_rung(p, 0, work / "rung-0")]
    rungs[0] |= {"seconds": None, "command": "dvc repro (the committed control)"}
    choose(rungs[0], p)
    started, pace, ran = time.perf_counter(), 0.0, False
    try:
        for k in range(1, args.rungs + 2):
            best = rungs[-1].get("promoted")
            if best is None:
                break  # choose() said why
            if k > args.rungs:
                rungs[-1]["stopped"] = f"--rungs {args.rungs} reached ({best} ships on this rung)"
                break
            left = args.max_minutes * 60 - (time.perf_counter() - started)
            if pace > left:
                rungs[-1]["stopped"] = (
                    f"time box: the next rung would take about {pace / 60:.0f} min at the "
                    f"last rung's pace, {left / 60:.0f} min were left ({best} ships on this rung)"
                )
                break
            stack[best] = config.as_dict(p.technique[best])
            args_k = overrides(stack)
            t0, ran = time.perf_counter(), True  # from here the workspace is the rung's
            exp_run(f"ladder-rung-{k}", args_k)
            pace = time.perf_counter() - t0
            p = config.load()
            record = save_rung(p, k, work / f"rung-{k}")
            record |= {
                "seconds": round(pace),
                "command": "dvc exp run " + " ".join(f"-S '{a}'" for a in args_k),
            }
            choose(record, p)
            rungs.append(record)
    finally:  # also after a failed or interrupted rung: the workspace back, what ran written
        if ran:
            restore()
        for r in rungs:
            write_json(work / f"rung-{r['rung']}" / "rung.json", r)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(work, folder)
        shutil.rmtree(work)
        write_bytes(Path(p.paths.ladder_plot), ladder_png(rungs))
        write_text(Path(p.paths.ladder_report), ladder_md(rungs, p))
    print(f"ladder: {len(rungs)} rungs -> {p.paths.ladder_report}")


if __name__ == "__main__":
    run(main)

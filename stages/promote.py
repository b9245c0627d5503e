"""Promote a shipped candidate: it becomes the last step of the control stack.

`python -m stages.promote <technique>` (`make promote T=<technique>`) refuses anything but a
current SHIP: the committed evidence (`reports/summary.json`) must give the technique SHIP against
the control that params.yaml names now, and `dvc status` must be clean (every stage's outputs
match its code, params and deps, so the verdict is that of this commit). It then appends the
technique to `technique@control` in conf/config.yaml, pins the options it shipped with under
`control:` there, recomposes params.yaml, and commits the two files: the team's sign-off is a
commit like any other. `--no-commit` leaves the two files changed for a review first.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stages import params as config
from stages.cli import run
from stages.compose import compose_text
from stages.errors import ParamsError
from stages.storage import read_json, write_text

CONFIG = Path("conf/config.yaml")
DEFAULT = re.compile(r"^(\s*- technique@control:\s*)\[(.*)\](.*)$", re.MULTILINE)


def refusal(summary: dict[str, Any], control: list[str], name: str) -> str | None:
    """Why `name` cannot be promoted on this evidence (None when it can)."""
    judged = summary.get("control", [])
    if judged != control:
        return (
            f"the evidence was judged against the control {judged or '[] (the baseline)'}, and "
            f"params.yaml now names {control or '[] (the baseline)'}: run `dvc repro` first"
        )
    candidates = summary.get("candidates", {})
    if name not in candidates:
        return f"{name} has no verdict in the current evidence; judged: {', '.join(candidates)}"
    verdict = candidates[name]["verdict"]
    if verdict != "SHIP":
        return f"{name} reads {verdict}, not SHIP: only a shipped candidate joins the control"
    if name in control:
        return f"{name} is already a step of the control"
    return None


def appended(text: str, name: str, options: dict[str, Any]) -> str:
    """conf/config.yaml with `name` appended to the control's defaults entry and its options
    pinned under the top-level `control:` mapping."""
    match = DEFAULT.search(text)
    if match is None:
        raise ParamsError(
            f"{CONFIG} has no `- technique@control: [...]` line in its defaults; add one"
        )
    steps = [s.strip() for s in match.group(2).split(",") if s.strip()]
    line = f"{match.group(1)}[{', '.join([*steps, name])}]{match.group(3)}"
    text = text[: match.start()] + line + text[match.end() :]
    pinned = f"  {name}: " + yaml.safe_dump(options, default_flow_style=True, width=10**6).strip()
    empty = re.compile(r"^control:\s*\{\}(.*)$", re.MULTILINE)
    if empty.search(text):  # the first pinned step: `control: {}` becomes a block mapping
        return empty.sub(lambda m: f"control:{m.group(1)}\n{pinned}", text, count=1)
    head = re.compile(r"^control:.*(\n  .*)*", re.MULTILINE)
    found = head.search(text)
    if found is None:
        raise ParamsError(f"{CONFIG} has no top-level `control:` mapping; add `control: {{}}`")
    return text[: found.end()] + "\n" + pinned + text[found.end() :]


def dvc_clean() -> str | None:
    """None when `dvc status` reports nothing to do, else what it reports."""
    done = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`dvc status` failed: {done.stderr.strip().splitlines()[-1:]}"
    stale = json.loads(done.stdout or "{}")
    stale.pop("host", None)  # always changed: it re-checks the machine, nothing depends on it
    return None if not stale else f"stale stages: {', '.join(sorted(stale))}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("technique")
    parser.add_argument("--no-commit", action="store_true", help="leave the files to review")
    args = parser.parse_args(argv)
    name = args.technique
    p = config.load()
    summary = read_json(Path(p.paths.summary), "report")
    why = refusal(summary, list(p.control), name) or dvc_clean()
    if why:
        raise ParamsError(f"cannot promote {name}: {why}")
    options = config.as_dict(p.technique[name])
    before = CONFIG.read_text()
    write_text(CONFIG, appended(before, name, options))
    try:  # the new composition must validate, or conf/ is left as it was
        composed = compose_text([], conf=CONFIG.parent)
        config.validate(yaml.safe_load(composed))
    except ParamsError:
        write_text(CONFIG, before)
        raise
    write_text(config.PARAMS_FILE, composed)
    stack = [*p.control, name]
    metrics = summary["candidates"][name].get("metrics", {})
    print(f"promoted {name}: the control is now baseline -> {' -> '.join(stack)}")
    if args.no_commit:
        return
    message = (
        f"Promote {name}: SHIP against {list(p.control) or 'the baseline'} (p50 speedup "
        f"{metrics.get('speedup_p50_b1', float('nan')):.3f} "
        f"[{metrics.get('speedup_p50_b1_low', float('nan')):.3f}, "
        f"{metrics.get('speedup_p50_b1_high', float('nan')):.3f}], accuracy drop "
        f"{metrics.get('accuracy_drop_points', float('nan')):+.2f} points); the control is now "
        f"{' -> '.join(['baseline', *stack])}"
    )
    subprocess.run(["git", "add", str(CONFIG), str(config.PARAMS_FILE)], check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], check=True)


if __name__ == "__main__":
    run(main)

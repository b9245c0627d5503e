"""Stage `optimize@<technique>`: apply one technique to the baseline; record what it changed."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from stages import data as datasets
from stages import params as config
from stages import stack
from stages.cli import run
from stages.errors import SETUP_ERRORS, CandidateRefused
from stages.evidence.manifest import changes
from stages.export import MANIFEST_FILE, MODEL_FILE, WEIGHTS_FILE
from stages.models.catalog import MODELS
from stages.onnx_graph import graph_summary
from stages.runtime import check_model
from stages.storage import atomic_dir, read_json, write_json
from stages.techniques.base import Context, NotApplicable
from stages.techniques.catalog import TECHNIQUES, Technique


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("technique", help=f"one of {sorted(TECHNIQUES)}")
    name = parser.parse_args(argv).technique
    p = config.load()
    if name not in p.technique:
        raise config.ParamsError(
            f"technique {name!r} is not selected in params.yaml; selected: {list(p.technique)}"
        )
    technique = TECHNIQUES[name]
    base_dir = stack.control_dir(p.paths, p.control)  # the baseline for an empty stack
    made_by = "control" if p.control else "baseline"
    check_model(base_dir / MODEL_FILE, made_by)
    baseline = read_json(base_dir / MANIFEST_FILE, made_by)
    weights = (Path(p.paths.baseline) / WEIGHTS_FILE).is_file()
    state = stack.state_of(list(p.control), weights)
    # an empty stack blocks nothing here: the technique's own checks say what the baseline lacks
    blocked = stack.not_applicable(state, name) if p.control else None
    prepared = datasets.read(Path(p.paths.data))
    with atomic_dir(Path(p.paths.candidates) / name) as out:
        ctx = Context(
            base_dir / MODEL_FILE,
            p.technique[name],
            prepared,
            out,
            p.seed,
            MODELS[p.model_name],
            p.model,
        )
        manifest = {
            "technique": name,
            "options": config.as_dict(p.technique[name]),
            "declares": list(technique.declares),
            "check": technique.check,
        }
        started = time.perf_counter()
        if blocked:  # cannot apply on top of the control (an empty stack blocks nothing)
            print(f"{name}: not applicable on the control: {blocked}")
            manifest |= {"status": "not_applicable", "reason": blocked}
        else:
            manifest |= _outcome(name, technique, ctx, baseline["graph"])
        if p.control:  # what this candidate was built on (absent for the baseline itself)
            manifest["control"] = list(p.control)
        seconds = {"optimize": round(time.perf_counter() - started, 1)}
        seconds |= (manifest.get("details") or {}).pop("seconds", {})
        write_json(out / "manifest.json", manifest)
    # wall-clock seconds go to a report, never into the model folder: a rerun of the same
    # technique then reproduces the candidate folder byte for byte
    write_json(
        Path(p.paths.optimize_log) / f"{name}.json",
        {"technique": name, "status": manifest["status"], "seconds": seconds},
    )


def _outcome(
    name: str, technique: Technique, ctx: Context, baseline_graph: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's status: ok with the details and the candidate's graph, or not_applicable /
    failed with the reason the report shows."""
    try:
        details = technique.apply(ctx)
    except NotApplicable as e:
        print(f"{name}: not applicable: {e}")
        return {"status": "not_applicable", "reason": str(e)}
    except SETUP_ERRORS:  # a setting to fix or evidence to restore: the stage fails with one line
        raise
    except Exception as e:  # this technique broke on this model: recorded; the others go on
        if not isinstance(e, CandidateRefused):  # a check's finding needs no traceback
            traceback.print_exc()
        _discard_outputs(ctx.out)
        reason = failure_reason(e)
        print(f"{name}: failed, recorded in its manifest: {reason}", file=sys.stderr)
        return {"status": "failed", "reason": reason}
    check_model(ctx.model_out, f"optimize@{name}")
    graph = graph_summary(ctx.model_out)
    changed = changes({"graph": baseline_graph}, {"graph": graph})
    print(f"{name}: {graph['size_bytes']} bytes, changed {changed}")
    return {"status": "ok", "details": details, "graph": graph, "changed": changed}


def failure_reason(e: BaseException) -> str:
    """The reason the report shows for a technique that raised: the error's type and first line
    (and, for an error no check raised, where its traceback is)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, CandidateRefused):
        return f"the technique refused its candidate ({type(e).__name__}: {first})"
    return f"the technique failed ({type(e).__name__}: {first}); its stage log has the traceback"


def _discard_outputs(out: Path) -> None:
    """Remove what a failed technique left half-written: the candidate is its manifest alone."""
    for path in out.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


if __name__ == "__main__":
    run(main)

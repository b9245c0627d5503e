"""Stage `control`: the control every candidate of this rung is compared with, built from the
baseline by applying the shipped techniques (`control` in params.yaml) in order, each with its
own options, deterministically.

An empty stack is the baseline itself: the stage then writes only its manifest, and every other
stage reads the baseline as before. Otherwise each step is built in `steps/<n>_<technique>/`
from the step before (the first from the baseline) with the technique's own `apply`, exactly as
`optimize` builds a candidate, and the last step's model is the control's `model.onnx`. A step
that cannot apply on top of the ones before (`stages.stack`) stops the stage with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from stages import data as datasets
from stages import params as config
from stages import stack
from stages.cli import run
from stages.errors import ParamsError
from stages.evidence.manifest import changes
from stages.export import MANIFEST_FILE, MODEL_FILE, WEIGHTS_FILE
from stages.models.catalog import MODELS
from stages.onnx_graph import graph_summary, model_files
from stages.runtime import check_model
from stages.storage import atomic_dir, write_json
from stages.techniques.base import Context, NotApplicable
from stages.techniques.catalog import TECHNIQUES


def build(p: config.Params, out: Path) -> dict[str, Any]:
    """Apply the stack's steps in order into `out`; the control's manifest."""
    base_dir = Path(p.paths.baseline)
    baseline = base_dir / MODEL_FILE
    check_model(baseline, "baseline")
    manifest: dict[str, Any] = {"stack": list(p.control), "steps": []}
    if not p.control:
        manifest["model"] = "the baseline (an empty stack)"
        return manifest
    prepared = datasets.read(Path(p.paths.data))
    state = stack.start((base_dir / WEIGHTS_FILE).is_file())
    current, before = baseline, graph_summary(baseline)
    for n, (name, options) in enumerate(p.control.items(), start=1):
        reason = stack.not_applicable(state, name)
        if reason:
            raise ParamsError(f"control: step {n} ({name}) cannot be built: {reason}")
        step_dir = out / "steps" / f"{n}_{name}"
        step_dir.mkdir(parents=True)
        ctx = Context(current, options, prepared, step_dir, p.seed, MODELS[p.model_name], p.model)
        try:
            details = TECHNIQUES[name].apply(ctx)
        except NotApplicable as e:
            raise ParamsError(f"control: step {n} ({name}) does not apply: {e}") from None
        details.pop("seconds", None)  # wall-clock figures stay out of model folders
        check_model(ctx.model_out, f"control step {n} ({name})")
        graph = graph_summary(ctx.model_out)
        state = stack.after(state, name)
        step = {
            "step": n,
            "technique": name,
            "options": config.as_dict(options),
            "details": details,
            "graph": graph,
            "changed": changes({"graph": before}, {"graph": graph}),
            "offers": {"graph": state.graph, "torch": state.torch, "serving": state.serving},
        }
        write_json(step_dir / MANIFEST_FILE, step)
        manifest["steps"].append({k: step[k] for k in ("step", "technique", "changed", "offers")})
        current, before = ctx.model_out, graph
    for f in model_files(current):  # the last step's model (and any external data) is the control
        shutil.copyfile(f, out / (MODEL_FILE if f == current else f.name))
    manifest["model"] = MODEL_FILE
    manifest["graph"] = graph_summary(out / MODEL_FILE)
    return manifest


def main() -> None:
    p = config.load()
    with atomic_dir(Path(p.paths.control)) as out:
        manifest = build(p, out)
        write_json(out / MANIFEST_FILE, manifest)
    what = " -> ".join(["baseline", *manifest["stack"]])
    print(f"control: {what}")


if __name__ == "__main__":
    run(main)

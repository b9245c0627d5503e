"""The null candidate: the baseline copied byte for byte, declared to change nothing.

It is the A/A control a user can run on any model as a candidate of its own: everything the
workbench reports for it (speedup, accuracy, slices) is what "no change" looks like on this
machine and model. Its speed rule should read "no measurable change", and it never ships: with a
speed budget above the noise floor (the default 1.1x) that is a REJECT, "no gain worth shipping".
"""

from __future__ import annotations

import shutil
from typing import Any

from stages.evidence.formats import ci
from stages.techniques.base import Context

DECLARES: tuple[str, ...] = ()  # nothing may differ; any difference confounds it

CHECK = "that nothing measurable changed: speedup inside the noise floor, no flipped prediction"


def apply(ctx: Context) -> dict[str, Any]:
    """Copy the baseline's ONNX file (and any external-data file beside it) unchanged."""
    shutil.copyfile(ctx.baseline, ctx.model_out)
    for extra in sorted(ctx.baseline.parent.glob(ctx.baseline.name + ".data")):
        shutil.copyfile(extra, ctx.out / extra.name)
    return {"copied": ctx.baseline.name}


def report(c: dict[str, Any]) -> list[str]:
    """What the null candidate shows about this run's noise."""
    b1 = c["benchmark"]["batches"][0]
    sp = b1["speedup"]["p50"]
    o = c["validation"]["overall"]
    return [
        f"- The candidate is the baseline's own file: p50 speedup at batch 1 "
        f"{ci(sp)} reads **{b1['effect']}** "
        f"against a noise floor of {b1['noise_floor']:.1%}; anything else would be a fault of "
        "the protocol, not of the model.",
        f"- Predictions: {o['right_to_wrong']} right->wrong and {o['wrong_to_right']} "
        "wrong->right (0 and 0 expected: the same file on the same inputs).",
    ]

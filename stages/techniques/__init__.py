"""The catalog of single-change techniques: one module each, registered in one plain dict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stages.techniques import batching, distill, fp16, fuse, identity, int8, prune, slowdown
from stages.techniques.base import GRAPH_REWRITE, Context, NotApplicable


@dataclass(frozen=True)
class Technique:
    options: type
    apply: Callable[[Context], dict[str, Any]]  # returns what it changed, for the manifest
    declares: tuple[str, ...]  # manifest fields this technique may change; anything else confounds
    check: str  # the check before shipping, as the review note names it
    # Markdown lines for the review note's check section, from the candidate's evidence
    report: Callable[[dict[str, Any]], list[str]] | None = None
    # cross-field checks of the options against the model's params (raise ParamsError)
    check_options: Callable[[Any, Any], None] | None = None


TECHNIQUES: dict[str, Technique] = {
    "int8_dynamic": Technique(
        int8.DynamicOptions,
        int8.apply_dynamic,
        GRAPH_REWRITE,
        "accuracy drop on real validation cases, overall and per slice",
    ),
    "int8_static": Technique(
        int8.StaticOptions,
        int8.apply_static,
        GRAPH_REWRITE,
        "accuracy drop on real validation cases, overall and per slice, and calibration "
        "sensitivity",
        int8.report_static,
    ),
    "prune_magnitude": Technique(
        prune.MagnitudeOptions,
        prune.apply_magnitude,
        prune.MAGNITUDE_DECLARES,
        prune.MAGNITUDE_CHECK,
        prune.report_magnitude,
    ),
    "prune_channels": Technique(
        prune.ChannelOptions,
        prune.apply_channels,
        prune.CHANNEL_DECLARES,
        prune.CHANNEL_CHECK,
        prune.report_channels,
    ),
    "distill": Technique(
        distill.Options,
        distill.apply,
        distill.DECLARES,
        distill.CHECK,
        distill.report,
        distill.check_options,
    ),
    "fp16": Technique(fp16.Options, fp16.apply, fp16.DECLARES, fp16.CHECK, fp16.report),
    "fuse": Technique(fuse.Options, fuse.apply, fuse.DECLARES, fuse.CHECK, fuse.report),
    "batching": Technique(
        batching.Options, batching.apply, batching.DECLARES, batching.CHECK, batching.report
    ),
    "identity": Technique(
        identity.Options, identity.apply, identity.DECLARES, identity.CHECK, identity.report
    ),
    "slowdown": Technique(
        slowdown.Options, slowdown.apply, slowdown.DECLARES, slowdown.CHECK, slowdown.report
    ),
}


__all__ = ["TECHNIQUES", "Context", "NotApplicable", "Technique"]


def get(name: str) -> Technique:
    try:
        return TECHNIQUES[name]
    except KeyError:
        raise KeyError(
            f"unknown technique {name!r}; choose one of: {', '.join(TECHNIQUES)}"
        ) from None

"""The catalog of single-change techniques: one module each, registered in one plain dict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stages.techniques import (
    batching,
    distill,
    fp16,
    fuse,
    identity,
    int8_dynamic,
    int8_static,
    prune_channels,
    prune_magnitude,
    slowdown,
)
from stages.techniques.base import Context
from stages.techniques.options import OPTIONS


@dataclass(frozen=True)
class Technique:
    options: type
    apply: Callable[[Context], dict[str, Any]]  # returns what it changed, for the manifest
    declares: tuple[str, ...]  # manifest fields this technique may change; anything else confounds
    check: str  # the check before shipping, as the review note names it
    # Markdown lines for the review note's check section, from the candidate's evidence
    report: Callable[[dict[str, Any]], list[str]] | None = None


def _technique(name: str, module: Any, report: bool = True) -> Technique:
    """The catalog entry of the technique `name`, whose module is `module`."""
    return Technique(
        OPTIONS[name],
        module.apply,
        module.DECLARES,
        module.CHECK,
        module.report if report else None,
    )


TECHNIQUES: dict[str, Technique] = {
    "int8_dynamic": _technique("int8_dynamic", int8_dynamic, report=False),
    "int8_static": _technique("int8_static", int8_static),
    "prune_magnitude": _technique("prune_magnitude", prune_magnitude),
    "prune_channels": _technique("prune_channels", prune_channels),
    "distill": _technique("distill", distill),
    "fp16": _technique("fp16", fp16),
    "fuse": _technique("fuse", fuse),
    "batching": _technique("batching", batching),
    "identity": _technique("identity", identity),
    "slowdown": _technique("slowdown", slowdown),
}


def get(name: str) -> Technique:
    try:
        return TECHNIQUES[name]
    except KeyError:
        raise KeyError(
            f"unknown technique {name!r}; choose one of: {', '.join(TECHNIQUES)}"
        ) from None

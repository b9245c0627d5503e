"""The error types the stages share, and the small checks that raise them.

Standard library only, and nothing from the project: every module can import its errors from
here without an import cycle (params imports the model and technique registries, whose modules
raise these errors too).
"""

from __future__ import annotations

import difflib
from typing import Any


class ParamsError(ValueError):
    """A params.yaml value that no stage can work with; the message says what to change."""


class EvidenceError(RuntimeError):
    """An input file of a stage is missing or unreadable; the message says how to restore it."""


class TargetUnavailable(RuntimeError):
    """The target's execution provider is not on this machine; nothing falls back to the CPU."""


class NotApplicable(Exception):
    """The technique cannot apply to this model; the message is the reason shown in the report."""


class CandidateRefused(RuntimeError):
    """A technique's own check refused the candidate it built: `optimize` records it as the
    technique's failure, with this message and no traceback (it is a finding, not a bug)."""


class FusionError(CandidateRefused):
    """The fused graph does not load, changes the inputs/outputs, or computes something else."""


class BatchInvarianceError(CandidateRefused):
    """Batched outputs differ from one-request-per-call outputs beyond the bound."""


# A setting to fix, evidence to restore or a target to provide: the stage stops with one line.
# `optimize` re-raises these from a technique instead of recording them as its failure.
SETUP_ERRORS: tuple[type[Exception], ...] = (ParamsError, EvidenceError, TargetUnavailable)
# The errors an entry point prints as one line, with no traceback, and exits 1 (stages.cli).
# A CandidateRefused inside `optimize` is the technique's own failure, recorded in its manifest
# (it is not in SETUP_ERRORS); anywhere else it ends the command with one line.
KNOWN: tuple[type[Exception], ...] = (*SETUP_ERRORS, CandidateRefused)


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    """ParamsError naming the field, its value and what is allowed, unless `ok`."""
    if not ok:
        raise ParamsError(f"{name} = {value!r} is not allowed; expected {allowed}")


def one_of(name: str, value: Any, allowed: tuple[str, ...] | list[str]) -> None:
    """ParamsError when `value` is not among `allowed`, suggesting the closest one."""
    if value not in allowed:
        raise ParamsError(
            f"{name} = {value!r} is unknown{closest(value, allowed)}; "
            f"choose one of: {', '.join(allowed)}"
        )


def closest(value: Any, allowed: tuple[str, ...] | list[str]) -> str:
    """` (did you mean 'x'?)` for the allowed value closest to `value`, or "" when none is."""
    close = difflib.get_close_matches(str(value), allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

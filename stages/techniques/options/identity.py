"""The options of identity: none."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Options:
    """No options: the candidate is the baseline file itself."""

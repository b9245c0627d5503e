"""Manifests of each side of a comparison, and the one-change check between them."""

from __future__ import annotations

from typing import Any


def side(graph: dict[str, Any], session: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """One side of a comparison: its graph, the session it ran in, the inputs it saw."""
    return {"graph": graph, "session": session, "inputs": inputs}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("op_types", "dtypes", "io"):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def changes(baseline: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """Manifest fields whose values differ between the two sides."""
    a, b = flatten(baseline), flatten(candidate)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def confounders(changed: list[str], declared: tuple[str, ...]) -> list[str]:
    """Changed fields the technique did not declare: each one confounds the comparison."""
    return [k for k in changed if not any(k == d or k.startswith(d + ".") for d in declared)]

"""The prepared data on disk: named sets of arrays plus slice definitions, shared by all presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.storage import read_arrays, read_json, save_arrays, sha256_arrays, write_json

LABELS = "labels"
MASK_PREFIX = "slice__"  # boolean masks over a set's rows are stored beside its inputs


@dataclass
class Slice:
    """A named subset: rows of one set, all of them when mask is None."""

    name: str
    set: str
    mask: str | None = None
    description: str = ""


@dataclass
class Prepared:
    inputs: list[str]  # the model's input names, in order
    class_names: list[str]
    sets: dict[str, dict[str, np.ndarray]]  # set name -> arrays (inputs, labels, masks)
    slices: list[Slice] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # preset-specific facts for the report

    def feeds(self, set_name: str) -> dict[str, np.ndarray]:
        return {k: self.sets[set_name][k] for k in self.inputs}

    def labels(self, set_name: str) -> np.ndarray:
        return self.sets[set_name][LABELS]

    def slice_rows(self, s: Slice) -> np.ndarray:
        """Row indices of a slice within its set."""
        n = len(self.labels(s.set))
        if s.mask is None:
            return np.arange(n)
        return np.flatnonzero(self.sets[s.set][MASK_PREFIX + s.mask])


def write(prepared: Prepared, out: Path) -> None:
    """Write every set as a deterministic .npz and the index as meta.json."""
    hashes = {}
    for name, arrays in prepared.sets.items():
        save_arrays(out / f"{name}.npz", arrays)
        hashes[name] = sha256_arrays(arrays)
    meta = {
        "inputs": prepared.inputs,
        "class_names": prepared.class_names,
        "sets": {
            k: {"rows": len(v[LABELS]), "sha256": hashes[k]} for k, v in prepared.sets.items()
        },
        "slices": [vars(s) for s in prepared.slices],
        "info": prepared.info,
    }
    write_json(out / "meta.json", meta)


def read(folder: Path) -> Prepared:
    meta = read_json(folder / "meta.json", "prepare")
    sets = {name: read_arrays(folder / f"{name}.npz", "prepare") for name in meta["sets"]}
    slices = [Slice(**s) for s in meta["slices"]]
    return Prepared(meta["inputs"], meta["class_names"], sets, slices, meta.get("info", {}))


def input_hash(prepared: Prepared, set_name: str) -> str:
    return sha256_arrays(prepared.feeds(set_name))

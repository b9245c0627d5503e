"""Every output of the candidate against the baseline's, on the same rows each run alone.

Accuracy judges one output, the one the labels belong to; a model with more outputs (boxes,
landmarks, embeddings) can move those without changing one argmax, so each output gets its own
fidelity figures here, and the error relative to the output's own range on the baseline makes
outputs of different scales comparable against one budget."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stages import stats
from stages.data import Prepared
from stages.errors import ParamsError
from stages.storage import EvidenceError


def output_names(sess: Any) -> list[str]:
    """The session's output names, in the model's order."""
    return [o.name for o in sess.get_outputs()]


def label_output(prepared: Prepared) -> str:
    """The output the labels belong to, as `prepare` recorded it ("" = the first output)."""
    return str(prepared.info.get("label_output", ""))


def label_of(sess: Any, prepared: Prepared) -> tuple[list[str], int]:
    """The session's output names and the position of the one the labels index."""
    names = output_names(sess)
    return names, label_index(names, label_output(prepared))


def label_index(names: list[str], wanted: str) -> int:
    """The position of the label output among the outputs; "" names the first."""
    if not wanted:
        return 0
    if wanted not in names:
        raise ParamsError(
            f"model.label_output = {wanted!r} is not an output of the model; its outputs are "
            f'{names}: name one of them, or leave it empty ("") for the first'
        )
    return names.index(wanted)


def fidelity(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Max abs error, cosine similarity and SQNR (dB) of `test` against `ref`."""
    return {
        "max_abs_error": stats.max_abs_error(ref, test),
        "cosine": stats.cosine_similarity(ref, test),
        "sqnr_db": stats.sqnr_db(ref, test),
    }


def relative_error(error: float, span: float) -> float:
    """An error as a share of the baseline's range: inf when a constant baseline moved at all."""
    if span > 0:
        return error / span
    return 0.0 if error == 0 else math.inf


def one_output(index: int, ref: np.ndarray, test: np.ndarray, label: bool) -> dict[str, Any]:
    """One output's figures: its range on the baseline (max - min over every row) and how far
    the candidate moved it, absolutely and relative to that range."""
    entry: dict[str, Any] = {"index": index, "label": label, "shape": list(ref.shape[1:])}
    if ref.dtype.kind not in "biuf" or ref.size == 0:
        return {**entry, "skipped": f"{ref.dtype} values of size {ref.size}: not compared"}
    if test.shape != ref.shape:
        raise EvidenceError(
            f"output {index} of the candidate has shape {list(test.shape)} on the validation "
            f"rows, the baseline's {list(ref.shape)}: a candidate must keep the outputs' shapes"
        )
    values = ref.astype(np.float64)
    span = float(values.max() - values.min())
    f = fidelity(ref, test)
    return {
        **entry,
        "baseline_range": span,
        **f,
        "relative_error": relative_error(f["max_abs_error"], span),
    }


def per_output(
    base: dict[str, np.ndarray], cand: dict[str, np.ndarray], label: str
) -> dict[str, dict[str, Any]]:
    """Every baseline output (name -> rows) against the candidate's of the same name."""
    missing = sorted(set(base) - set(cand))
    if missing:
        raise EvidenceError(
            f"the candidate lacks the baseline's output(s) {missing} (it has {sorted(cand)}): "
            "a candidate must keep every output of the baseline"
        )
    return {
        name: one_output(i, ref, cand[name], name == label)
        for i, (name, ref) in enumerate(base.items())
    }


def worst_other(outputs: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The compared output, other than the label one, with the largest relative error (NaN
    the largest)."""
    rest = [(n, o) for n, o in outputs.items() if not o["label"] and "relative_error" in o]
    if not rest:
        return None

    def key(item: tuple[str, dict[str, Any]]) -> tuple[float, int]:
        rel = item[1]["relative_error"]
        return (math.inf if math.isnan(rel) else rel, -item[1]["index"])

    return max(rest, key=key)

"""Stage `reference`: the control's predictions on every set the slices use, each row alone.

Computed once on the target's session and shared by every `validate@<technique>`, which pairs
them with the candidate's row by row: the label output's logits on every set, and every output
on the validation rows (for each output's fidelity). The control is the baseline for an empty
stack; on a stack the original baseline's predictions are kept too, in `original/` (the
stack's cumulative comparison)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages import data as datasets
from stages import fidelity, stack
from stages import params as config
from stages.cli import run
from stages.export import MODEL_FILE
from stages.models.catalog import MODELS
from stages.predictions import (
    ORIGINAL_DIR,
    REFERENCE_FILE,
    REFERENCE_LOGITS,
    REFERENCE_OUTPUTS,
    eval_sets,
)
from stages.runtime import row_workers, run_alone, session, session_settings
from stages.storage import atomic_dir, save_arrays, sha256_file, write_json


def predict_into(
    out: Path, model: Path, p: config.Params, prepared: datasets.Prepared, who: str
) -> float:
    """`model`'s predictions, each row alone, into folder `out`; its validation accuracy."""
    sess = session(model, p.target, who)
    workers = row_workers(model, p.target)
    names, label = fidelity.label_of(sess, prepared)
    how: dict[str, dict[str, Any]] = {name: {} for name in eval_sets(prepared)}
    runs = {
        name: run_alone(
            sess, prepared.feeds(name), MODELS[p.model_name], f"{who} {name}", workers, how[name]
        )
        for name in eval_sets(prepared)
    }
    logits = {name: outs[label].astype(np.float32) for name, outs in runs.items()}
    save_arrays(out / REFERENCE_LOGITS, logits)
    save_arrays(out / REFERENCE_OUTPUTS, {str(i): v for i, v in enumerate(runs["validation"])})
    write_json(
        out / REFERENCE_FILE,
        {
            "model_sha256": sha256_file(model),
            "label_output": names[label],
            "outputs": names,  # outputs.npz holds them on the validation rows, by position
            "rows": {name: len(v) for name, v in logits.items()},
            "rows_per_call": 1,
            "rows_alone": how,  # how the rows were run (in parallel when checked equal)
            "session": session_settings(p.target),
        },
    )
    return float((logits["validation"].argmax(1) == prepared.labels("validation")).mean())


def main() -> None:
    p = config.load()
    prepared = datasets.read(Path(p.paths.data))
    model = stack.control_dir(p.paths, p.control) / MODEL_FILE  # the baseline for an empty stack
    who = "control" if p.control else "baseline"
    rows = len(prepared.labels("validation"))
    with atomic_dir(Path(p.paths.reference)) as out:
        accuracy = predict_into(out, model, p, prepared, who)
        if p.control:  # the original baseline too, for the stack's cumulative comparison
            (out / ORIGINAL_DIR).mkdir()
            base = Path(p.paths.baseline) / MODEL_FILE
            first = predict_into(out / ORIGINAL_DIR, base, p, prepared, "baseline")
            print(f"reference: original baseline accuracy {first:.4f} on {rows} rows alone")
    print(f"reference: {who} accuracy {accuracy:.4f} on {rows} rows alone")


if __name__ == "__main__":
    run(main)

"""Stage `reference`: the baseline's predictions on every set the slices use, each row alone.

Computed once on the target's session and shared by every `validate@<technique>`, which pairs
them with the candidate's row by row: the label output's logits on every set, and every output
on the validation rows (for each output's fidelity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages import data as datasets
from stages import fidelity
from stages import params as config
from stages.cli import run
from stages.export import MODEL_FILE
from stages.models.catalog import MODELS
from stages.predictions import REFERENCE_FILE, REFERENCE_LOGITS, REFERENCE_OUTPUTS, eval_sets
from stages.runtime import row_workers, run_alone, session, session_settings
from stages.storage import atomic_dir, save_arrays, sha256_file, write_json


def main() -> None:
    p = config.load()
    prepared = datasets.read(Path(p.paths.data))
    model = Path(p.paths.baseline) / MODEL_FILE
    sess = session(model, p.target, "baseline")
    workers = row_workers(model, p.target)
    names, label = fidelity.label_of(sess, prepared)
    how: dict[str, dict[str, Any]] = {name: {} for name in eval_sets(prepared)}
    runs = {
        name: run_alone(
            sess, prepared.feeds(name), MODELS[p.model_name], f"baseline {name}", workers, how[name]
        )
        for name in eval_sets(prepared)
    }
    logits = {name: outs[label].astype(np.float32) for name, outs in runs.items()}
    with atomic_dir(Path(p.paths.reference)) as out:
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
    accuracy = (logits["validation"].argmax(1) == prepared.labels("validation")).mean()
    print(f"reference: baseline accuracy {accuracy:.4f} on {len(logits['validation'])} rows alone")


if __name__ == "__main__":
    run(main)

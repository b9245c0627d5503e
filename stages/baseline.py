"""Stage `baseline`: train the preset's model, export it to ONNX, check parity with torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages import data as datasets
from stages import params as config
from stages.cli import run
from stages.export import (
    MANIFEST_FILE,
    MODEL_FILE,
    PARITY_ROWS,
    TRAIN_EMBEDDINGS_FILE,
    TRAIN_LOGITS_FILE,
    WEIGHTS_FILE,
    ParityError,
    export,
    parity,
)
from stages.models.catalog import MODELS
from stages.onnx_graph import graph_summary
from stages.storage import atomic_dir, write_json


def main() -> None:
    import torch

    p = config.load()
    prepared = datasets.read(Path(p.paths.data))
    feeds = prepared.feeds("validation")
    preset = MODELS[p.model_name]
    with atomic_dir(Path(p.paths.baseline)) as out:
        provide_onnx = preset.provide_onnx
        if provide_onnx is not None:  # a model that arrives as ONNX: nothing to train
            log = provide_onnx(p.model, prepared, out / MODEL_FILE)
            check: dict[str, Any] = {
                "skipped": "the model arrived as ONNX: there is no framework model to compare"
            }
            print(f"baseline: {log}")
        else:
            module, log = preset.train(p.model, prepared, p.seed)
            example = {k: v[:2] for k, v in feeds.items()}
            export(module, example, out / MODEL_FILE, preset.DYNAMIC_AXES)
            trim = preset.trim
            err = parity(module, out / MODEL_FILE, feeds, p.model.parity_tolerance, trim)
            torch.save(module.state_dict(), out / WEIGHTS_FILE)
            for name, attribute in (
                (TRAIN_LOGITS_FILE, "train_logits"),
                (TRAIN_EMBEDDINGS_FILE, "train_embeddings"),
            ):
                kept = getattr(module, attribute, None)  # set by a preset's finetune
                if kept is not None:  # kept for distill's teacher
                    np.save(out / name, kept.numpy())
            check = {
                "max_abs_error": err,
                "tolerance": p.model.parity_tolerance,
                "rows": min(PARITY_ROWS, len(prepared.labels("validation"))),
            }
            print(f"baseline: parity max abs error {err:.2e}, final loss {log['final_loss']:.4f}")
        manifest = {
            "model": p.model_name,
            "graph": graph_summary(out / MODEL_FILE),
            "parity": check,
            "training": log,
        }
        write_json(out / MANIFEST_FILE, manifest)


if __name__ == "__main__":
    run(main, (ParityError,))

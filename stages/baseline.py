"""Stage `baseline`: train the preset's model, export it to ONNX, check parity with torch."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from stages import data as D
from stages import params as P
from stages.cli import run
from stages.evidence.manifest import graph_summary
from stages.io import atomic_dir, write_json
from stages.stats import max_abs_error

MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"


class ParityError(RuntimeError):
    """The exported graph does not compute what the framework model computes."""


def export(module: Any, example: dict[str, np.ndarray], path: Path) -> None:
    """torch -> ONNX with a dynamic batch axis on every input and output, weights in one file."""
    import torch

    names = list(example)
    batch = torch.export.Dim("batch")
    args = tuple(torch.from_numpy(v) for v in example.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes=tuple({0: batch} for _ in names),
        )


def parity(module: Any, path: Path, feeds: dict[str, np.ndarray], tolerance: float) -> float:
    """Max abs error of ONNX Runtime's logits against torch's on real inputs; raise above tolerance."""
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        expected = module(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    err = max_abs_error(expected, got)
    if not err <= tolerance:
        raise ParityError(
            f"exported ONNX differs from torch by {err:.3g} (max abs logit error), above "
            f"model.parity_tolerance = {tolerance:g}: the export is wrong; check unsupported ops"
        )
    return err


def main() -> None:
    import torch

    p = P.load()
    prepared = D.read(Path(p.paths.data))
    module, log = p.preset.train(p.model, prepared, p.seed)
    feeds = prepared.feeds("validation")
    with atomic_dir(Path(p.paths.baseline)) as out:
        export(module, {k: v[:2] for k, v in feeds.items()}, out / MODEL_FILE)
        err = parity(module, out / MODEL_FILE, feeds, p.model.parity_tolerance)
        torch.save(module.state_dict(), out / WEIGHTS_FILE)
        manifest = {
            "model": p.model_name,
            "graph": graph_summary(out / MODEL_FILE),
            "parity": {
                "max_abs_error": err,
                "tolerance": p.model.parity_tolerance,
                "rows": len(prepared.labels("validation")),
            },
            "training": log,
        }
        write_json(out / MANIFEST_FILE, manifest)
    print(f"baseline: parity max abs error {err:.2e}, final loss {log['final_loss']:.4f}")


if __name__ == "__main__":
    run(main, (ParityError,))

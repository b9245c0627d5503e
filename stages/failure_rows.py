"""The rows a candidate got wrong, beside the baseline's answer: every right->wrong flip and the
hardest still-wrong rows, one rendered file each with an index, and every row's predictions."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from stages import data as datasets
from stages.storage import write_bytes, write_text

HARDEST = 20  # still-wrong examples kept beside the flips


def margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Top logit minus the true class's logit: 0 when right, how far off when wrong."""
    return logits.max(1) - logits[np.arange(len(labels)), labels]


def failures(
    prepared: datasets.Prepared, logits: dict[str, tuple[np.ndarray, np.ndarray]]
) -> list[dict[str, Any]]:
    """Every right->wrong flip (most confidently wrong first), then the hardest still-wrong rows."""
    flips, still = [], []
    for name, (b, c) in logits.items():
        y = prepared.labels(name)
        b_pred, c_pred = b.argmax(1), c.argmax(1)
        b_margin, c_margin = margin(b, y), margin(c, y)
        for i in np.flatnonzero((b_pred == y) & (c_pred != y)):
            flips.append(
                _row("right_to_wrong", name, int(i), y, b_pred, c_pred, b_margin, c_margin)
            )
        for i in np.flatnonzero((b_pred != y) & (c_pred != y)):
            still.append(_row("still_wrong", name, int(i), y, b_pred, c_pred, b_margin, c_margin))
    flips.sort(key=lambda r: (-r["candidate_margin"], r["set"], r["index"]))
    still.sort(key=lambda r: (-r["candidate_margin"], r["set"], r["index"]))
    return flips + still[:HARDEST]


def _row(
    kind: str, set_name: str, i: int, y: Any, bp: Any, cp: Any, bm: Any, cm: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "set": set_name,
        "index": i,
        "label": int(y[i]),
        "baseline_pred": int(bp[i]),
        "candidate_pred": int(cp[i]),
        "baseline_margin": round(float(bm[i]), 5),
        "candidate_margin": round(float(cm[i]), 5),
    }


def write_failures(
    out: Path, rows: list[dict[str, Any]], prepared: datasets.Prepared, render: Any
) -> None:
    """One file per failure (the input rendered by the preset) plus index.csv."""
    buf = io.StringIO()
    fields = ["rank", "file", *(rows[0].keys() if rows else [])]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for rank, r in enumerate(rows, 1):
        arrays = prepared.sets[r["set"]]  # inputs, labels and any extra columns (e.g. text)
        row = {
            k: v[r["index"] : r["index"] + 1]
            for k, v in arrays.items()
            if len(v) == len(arrays[datasets.LABELS])
        }
        suffix, content = render(row)
        name = (
            f"{rank:03d}_{r['kind']}_{r['set']}_{r['index']}"
            f"_true{r['label']}_cand{r['candidate_pred']}{suffix}"
        )
        write_bytes(out / name, content)
        w.writerow({"rank": rank, "file": name, **r})
    write_text(out / "index.csv", buf.getvalue())


def predictions_csv(
    prepared: datasets.Prepared, logits: dict[str, tuple[np.ndarray, np.ndarray]]
) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "set",
            "index",
            "label",
            "baseline_pred",
            "candidate_pred",
            "baseline_margin",
            "candidate_margin",
        ]
    )
    for name, (b, c) in logits.items():
        y = prepared.labels(name)
        for i, row in enumerate(
            zip(y, b.argmax(1), c.argmax(1), margin(b, y), margin(c, y), strict=True)
        ):
            w.writerow(
                [name, i, int(row[0]), int(row[1]), int(row[2]), f"{row[3]:.5f}", f"{row[4]:.5f}"]
            )
    return buf.getvalue()

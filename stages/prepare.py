"""Stage `prepare`: the model preset's data, split and sliced, seeded."""

from __future__ import annotations

from pathlib import Path

from stages import data
from stages import params as config
from stages.cli import run
from stages.models.catalog import MODELS
from stages.storage import atomic_dir


def main() -> None:
    p = config.load()
    prepared = MODELS[p.model_name].prepare(p.model, p.seed)
    with atomic_dir(Path(p.paths.data)) as out:
        data.write(prepared, out)
    rows = {k: len(v[data.LABELS]) for k, v in prepared.sets.items()}
    print(f"prepared {rows} with {len(prepared.slices)} slices")


if __name__ == "__main__":
    run(main)

"""Recompose params.yaml from conf/ with DVC's own Hydra composer: `python -m stages.compose [overrides]`."""

from __future__ import annotations

import sys
from pathlib import Path

from stages.cli import run
from stages.params import PARAMS_FILE, compose, validate


def main(argv: list[str] | None = None) -> None:
    """Recompose params.yaml from conf/ (plus Hydra overrides) with DVC's own composer."""
    from dvc.utils.hydra import compose_and_dump

    overrides = sys.argv[1:] if argv is None else argv
    validate(compose(overrides))  # refuse to write params that no stage would accept
    compose_and_dump(PARAMS_FILE, str(Path("conf").resolve()), None, "config", ".", overrides)
    print(f"wrote {PARAMS_FILE} from conf/ {' '.join(overrides)}".rstrip())


if __name__ == "__main__":
    run(main)

"""Recompose params.yaml from conf/ with DVC's own Hydra composer:
`python -m stages.compose [overrides]`."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from stages.cli import run
from stages.params import PARAMS_FILE, ParamsError, check_overrides, validate
from stages.storage import write_text


def compose_text(overrides: list[str], conf: Path = Path("conf")) -> str:
    """The YAML that `dvc exp run -S` would write for these overrides (DVC's own composer)."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / PARAMS_FILE.name
        try:
            check_overrides(overrides, conf)
            compose_and_dump(out, str(conf.resolve()), None, "config", ".", overrides)
        except HydraException as e:
            lines = str(e).split("\nConfig search path")[0].split("\n")  # drop Hydra's search path
            raise ParamsError(" ".join(line.strip() for line in lines if line.strip())) from None
        return out.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Recompose params.yaml from conf/ (plus Hydra overrides); write it only if it validates."""
    parser = argparse.ArgumentParser(prog="python -m stages.compose", description=__doc__)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides as for `dvc exp run -S`, e.g. target=edge"
    )
    parser.add_argument("--out", type=Path, default=PARAMS_FILE, help="default: %(default)s")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    text = compose_text(args.overrides)
    validate(yaml.safe_load(text))  # refuse to write params that no stage would accept
    write_text(args.out, text)  # atomic: a failure or a kill leaves the old file whole
    print(f"wrote {args.out} from conf/ {' '.join(args.overrides)}".rstrip())


if __name__ == "__main__":
    run(main)

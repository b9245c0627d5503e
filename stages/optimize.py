"""Stage `optimize@<technique>`: apply one technique to the baseline; record what it changed."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import data as D
from stages import params as P
from stages.cli import run
from stages.evidence.manifest import changes, graph_summary
from stages.export import MANIFEST_FILE, MODEL_FILE
from stages.io import atomic_dir, read_json, write_json
from stages.runtime import check_model
from stages.techniques import TECHNIQUES, Context, NotApplicable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("technique", help=f"one of {sorted(TECHNIQUES)}")
    name = parser.parse_args(argv).technique
    p = P.load()
    if name not in p.technique:
        raise P.ParamsError(
            f"technique {name!r} is not selected in params.yaml; selected: {list(p.technique)}"
        )
    technique = TECHNIQUES[name]
    base_dir = Path(p.paths.baseline)
    check_model(base_dir / MODEL_FILE, "baseline")
    baseline = read_json(base_dir / MANIFEST_FILE, "baseline")
    prepared = D.read(Path(p.paths.data))
    with atomic_dir(Path(p.paths.candidates) / name) as out:
        ctx = Context(
            base_dir / MODEL_FILE, p.technique[name], prepared, out, p.seed, p.preset, p.model
        )
        manifest = {
            "technique": name,
            "options": P.as_dict(p.technique[name]),
            "declares": list(technique.declares),
            "check": technique.check,
        }
        try:
            details = technique.apply(ctx)
        except NotApplicable as reason:
            manifest.update(status="not_applicable", reason=str(reason))
            print(f"{name}: not applicable: {reason}")
        else:
            check_model(ctx.model_out, f"optimize@{name}")
            graph = graph_summary(ctx.model_out)
            manifest.update(
                status="ok",
                details=details,
                graph=graph,
                changed=changes({"graph": baseline["graph"]}, {"graph": graph}),
            )
            print(f"{name}: {graph['size_bytes']} bytes, changed {manifest['changed']}")
        write_json(out / "manifest.json", manifest)


if __name__ == "__main__":
    run(main)

"""The null candidate: a byte copy of the baseline, declared to change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages import params as config
from stages.data import Prepared
from stages.evidence.manifest import changes, confounders
from stages.onnx_graph import graph_summary
from stages.techniques import identity
from stages.techniques.base import Context
from stages.techniques.catalog import TECHNIQUES
from stages.techniques.options import identity as identity_options


def test_identity_copies_the_baseline_and_changes_nothing(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = Context(tiny_onnx, identity_options.Options(), tiny_data, tmp_path, 0)

    details = identity.apply(ctx)

    assert ctx.model_out.read_bytes() == tiny_onnx.read_bytes()
    assert details == {"copied": "model.onnx"}
    before, after = graph_summary(tiny_onnx), graph_summary(ctx.model_out)
    changed = changes({"graph": before}, {"graph": after})
    assert changed == []
    assert confounders(changed, TECHNIQUES["identity"].declares) == []


def test_identity_is_selectable_like_any_technique(cfg: dict[str, Any]) -> None:
    composed = config.compose(["technique=[identity]", "model=digits_cnn"], conf=Path("conf"))

    p = config.validate(composed)

    assert list(p.technique) == ["identity"]
    assert isinstance(p.technique["identity"], identity_options.Options)

"""prune_magnitude on the real MiniLM encoder, kept small: the first pretrained layer, its head
trained on 400 snippets, pruned to 40 % and refit (the preset's own fine-tune: the head on the
frozen, pruned encoder) for one epoch. Against that baseline on the 100 validation rows the
candidate's argmax agrees on >= 90 % (measured 98 %)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from stages.export import MODEL_FILE
from stages.models import minilm
from stages.techniques import prune_magnitude
from stages.techniques.base import Context, NotApplicable
from stages.techniques.options import prune as prune_options

if TYPE_CHECKING:
    from conftest import MiniLMBaseline as Baseline

SMALL: dict[str, Any] = {"layers": 1, "max_rows": 400, "calibration_size": 32, "epochs": 5}
OPTIONS = prune_options.MagnitudeOptions(sparsity=0.4, finetune_epochs=1)
# the six Linear layers of the kept encoder layer, and the head; the pooler's output is unused
LINEAR = 4 * 384 * 384 + 2 * 384 * 1536 + 2 * 384


@pytest.fixture(scope="module")
def base(minilm_baseline: Callable[[dict[str, Any]], Baseline]) -> Baseline:
    return minilm_baseline(SMALL)


def _apply(
    b: Baseline, out: Path, options: prune_options.MagnitudeOptions = OPTIONS
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    return prune_magnitude.apply(Context(b.onnx, options, b.data, out, 0, minilm.PRESET, b.params))


@pytest.fixture(scope="module")
def applied(base: Baseline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prune_magnitude")
    return out / MODEL_FILE, _apply(base, out)


def _io(path: Path) -> dict[str, list[tuple[str, list[Any]]]]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {
        "inputs": [(i.name, list(i.shape)) for i in s.get_inputs()],
        "outputs": [(o.name, list(o.shape)) for o in s.get_outputs()],
    }


def _zeros(path: Path) -> int:
    inits = (numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer)
    return sum(int((a == 0).sum()) for a in inits if a.ndim == 2 and a.dtype == np.float32)


def test_pruned_model_loads_and_keeps_the_baselines_inputs_and_outputs(
    applied: tuple[Path, dict], base: Baseline
) -> None:
    path, _ = applied

    io = _io(path)

    assert io == _io(base.onnx)
    assert [shape for _, shape in io["inputs"]] == [["batch", "sequence"]] * 2
    feeds = base.data.feeds("validation")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for feed in (
        minilm.trim({k: feeds[k][:1] for k in minilm.INPUTS}),
        {k: feeds[k][:5] for k in minilm.INPUTS},
    ):
        assert sess.run(None, feed)[0].shape == (len(feed[minilm.IDS]), 2)


def test_the_sparsity_is_reached_in_the_onnx_file(
    applied: tuple[Path, dict], base: Baseline
) -> None:
    path, d = applied

    assert d["sparsity_reached"] == pytest.approx(OPTIONS.sparsity, abs=1e-3)
    assert d["prunable_weights"] == LINEAR
    assert d["not_in_graph"] == ["encoder.pooler.dense"]
    assert d["onnx"]["weights"] == LINEAR and d["onnx"]["weight_tensors"] == 7
    assert d["onnx"]["zeros"] == d["zero_weights"]
    # counted independently: zeros in the file's float matrices, against the baseline's
    assert _zeros(path) - _zeros(base.onnx) == d["zero_weights"]


def test_the_head_is_refit_on_the_frozen_pruned_encoder(
    applied: tuple[Path, dict], base: Baseline
) -> None:
    _, d = applied

    assert d["finetune"]["trained"] == "head only; encoder frozen"
    assert len(d["finetune"]["epochs"]) == 1
    assert d["finetune"]["train_rows"] == len(base.data.labels("train"))
    lines = prune_magnitude.report({"manifest": {"details": d}})
    assert any(
        line.startswith("- Fine-tune (head only; encoder frozen): 1 epoch") for line in lines
    )
    assert any("encoder.pooler.dense" in line for line in lines)


def test_two_runs_give_identical_bytes(
    applied: tuple[Path, dict], base: Baseline, tmp_path: Path
) -> None:
    path, d = applied

    again = _apply(base, tmp_path / "again")

    assert again == d
    assert (tmp_path / "again" / MODEL_FILE).read_bytes() == path.read_bytes()


def test_a_heavy_preset_without_its_own_finetune_is_not_applicable(
    base: Baseline, tmp_path: Path
) -> None:
    class Heavy(minilm.MiniLM):  # a pretrained model with no cheap fine-tune of its own
        finetune = None

    heavy = Heavy()
    assert heavy.HEAVY

    with pytest.raises(NotApplicable, match="finetune_epochs=0"):
        prune_magnitude.apply(
            Context(base.onnx, OPTIONS, base.data, tmp_path, 0, heavy, base.params)
        )


def test_pruned_model_stays_close_to_the_baseline(
    applied: tuple[Path, dict], base: Baseline
) -> None:
    feeds = {k: base.data.feeds("validation")[k] for k in minilm.INPUTS}
    before = ort.InferenceSession(str(base.onnx), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(applied[0]), providers=["CPUExecutionProvider"])

    agreement = float(
        (before.run(None, feeds)[0].argmax(1) == after.run(None, feeds)[0].argmax(1)).mean()
    )

    assert agreement >= 0.90  # measured 0.98

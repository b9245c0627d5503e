"""distill on the real MiniLM encoder, kept small: a 2-layer teacher (the first two pretrained
layers, its head trained on 400 snippets) distilled into a 1-layer student built from one of the
teacher's layers, its embeddings and head, for one epoch, with the preset's loss (the teacher's
soft labels alone) unless a test says otherwise."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stages.export import MODEL_FILE
from stages.models import digits, minilm
from stages.params import ParamsError
from stages.techniques import distill, distill_report, distill_training
from stages.techniques.base import Context
from stages.techniques.options import distill as distill_options

if TYPE_CHECKING:
    from conftest import MiniLMBaseline as Baseline

TEACHER: dict[str, Any] = {"layers": 2, "max_rows": 400, "calibration_size": 32, "epochs": 5}
# what the baseline stage exports for this preset (tests/test_minilm.py)
BASELINE_IO = {
    "inputs": [("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"])],
    "outputs": [("logits", ["batch", 2])],
}
OPTIONS = distill_options.Options(
    student={"layers": 1}, epochs=1, batch_size=16, learning_rate=1e-4
)


@pytest.fixture(scope="module")
def base(minilm_baseline: Callable[[dict[str, Any]], Baseline]) -> Baseline:
    return minilm_baseline(TEACHER)


def _apply(b: Baseline, out: Path, options: distill_options.Options = OPTIONS) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    return distill.apply(Context(b.onnx, options, b.data, out, 0, minilm.PRESET, b.params))


@pytest.fixture(scope="module")
def applied(base: Baseline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("distill")
    return out / MODEL_FILE, _apply(base, out)


def _io(path: Path) -> dict[str, list[tuple[str, list[Any]]]]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {
        "inputs": [(i.name, list(i.shape)) for i in s.get_inputs()],
        "outputs": [(o.name, list(o.shape)) for o in s.get_outputs()],
    }


def _pick(keep: list[int]) -> Callable[[int, int], list[int]]:
    return lambda teacher_layers, student_layers: keep


@pytest.mark.parametrize("keep", [[0], [1]])
def test_student_starts_from_the_teachers_layers_it_keeps(base: Baseline, keep: list[int]) -> None:
    student = minilm.student(base.module, minilm.Params(**{**TEACHER, "layers": 1}), _pick(keep))

    assert len(student.encoder.encoder.layer) == 1
    assert student.encoder.config.num_hidden_layers == 1
    assert len(base.module.encoder.encoder.layer) == 2  # the teacher is left whole
    dropped = f".layer.{1 - keep[0]}."
    kept = {
        k.replace(f".layer.{keep[0]}.", ".layer.0."): v
        for k, v in base.module.state_dict().items()
        if dropped not in k
    }
    assert kept.keys() == student.state_dict().keys()
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in kept.items())
    frozen = [k for k, v in student.named_parameters() if not v.requires_grad]
    assert frozen == ["encoder.embeddings.word_embeddings.weight"]


def test_kept_layers_are_spread_evenly_unless_named() -> None:
    spread = distill.keep_layers(distill_options.Options(), 6, 3)
    named = distill.keep_layers(distill_options.Options(keep_layers=[3, 4, 5]), 6, 3)

    assert spread == [0, 2, 4]  # every other layer, as DistilBERT
    assert distill.keep_layers(distill_options.Options(), 6, 2) == [0, 3]
    assert named == [3, 4, 5]
    with pytest.raises(ParamsError, match=r"^keep_layers = \[0, 1\] .*expected 3 increasing"):
        distill.keep_layers(distill_options.Options(keep_layers=[0, 1]), 6, 3)
    with pytest.raises(ParamsError, match=r"^keep_layers = \[0, 2, 6\] .*below the teacher's 6"):
        distill.keep_layers(distill_options.Options(keep_layers=[0, 2, 6]), 6, 3)
    with pytest.raises(ParamsError, match=r"^keep_layers = \[2, 1\] .*increasing"):
        distill_options.Options(keep_layers=[2, 1])


def test_student_loads_and_keeps_the_baselines_inputs_and_outputs(
    applied: tuple[Path, dict], base: Baseline
) -> None:
    path, d = applied
    io = _io(path)

    assert io == BASELINE_IO
    feeds = minilm.trim({k: v[:3] for k, v in base.data.feeds("validation").items()})
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert s.run(None, feeds)[0].shape == (3, 2)
    p = d["parameters"]
    assert p["student"] < p["teacher"]


def test_student_mostly_agrees_with_the_teacher(applied: tuple[Path, dict], base: Baseline) -> None:
    """One epoch from the teacher's own weights: the student mostly agrees with it."""
    path, _ = applied
    feeds = minilm.trim(base.data.feeds("validation"))  # to the longest real row
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    student = s.run(None, feeds)[0].argmax(1)
    with torch.no_grad():
        teacher = base.module(*(torch.from_numpy(v) for v in feeds.values())).argmax(1).numpy()

    assert np.mean(student == teacher) >= 0.7


def test_details_record_the_loss_per_epoch_and_the_training(applied: tuple[Path, dict]) -> None:
    _, d = applied

    assert d["student"] == {"layers": 1}
    assert d["keep_layers"] == [0] and d["loss"] == "logits" and d["alpha"] == 1.0
    assert [e["epoch"] for e in d["epochs"]] == [1]
    keys = {"loss", "soft_loss", "hard_loss", "train_accuracy", "tuning_agreement"}
    assert keys | {"tuning_accuracy"} <= set(d["epochs"][0])
    t = d["training"]
    assert (t["epochs"], t["batch_size"], t["learning_rate"]) == (1, 16, 1e-4)
    assert t["schedule"] == "linear" and t["head"] == "trained"
    # 400 - 100 validation - 32 calibration = 268 train rows, a fifth of them (53) held out
    assert t["rows"] == 215
    assert t["tuning_rows"] == {"held_out_train": 53, "calibration": 32}
    assert t["batches"] == "length-bucketed, trimmed"
    assert "seconds" not in t  # wall-clock figures stay out of the model folder's manifest
    assert d["seconds"]["training"] >= 0 and d["seconds"]["teacher_targets"] >= 0


def test_the_embedding_loss_keeps_the_teachers_head(base: Baseline, tmp_path: Path) -> None:
    """With the embedding loss the student's head is the teacher's, untouched: its decision
    function is the teacher's, and only the encoder learns (the pooled embedding's MSE)."""
    import onnx
    from onnx import numpy_helper

    d = _apply(base, tmp_path, dataclasses.replace(OPTIONS, loss="embedding"))

    def head(model: onnx.ModelProto) -> list[np.ndarray]:
        gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
        weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [weights[name] for name in gemm.input[1:]]

    student, teacher = head(onnx.load(tmp_path / MODEL_FILE)), head(onnx.load(base.onnx))
    assert all(np.array_equal(a, b) for a, b in zip(student, teacher, strict=True))
    assert d["loss"] == "embedding" and d["training"]["head"] == "the teacher's, frozen"
    assert {"mse", "tuning_agreement"} <= set(d["epochs"][0])
    assert d["training"]["teacher_targets"] == "kept by the baseline stage (train_embeddings.npy)"


def test_soft_and_hard_labels_mix_with_alpha_below_one(base: Baseline, tmp_path: Path) -> None:
    options = dataclasses.replace(OPTIONS, alpha=0.7, schedule="constant")

    d = _apply(base, tmp_path, options)

    assert d["loss"] == "logits" and d["training"]["head"] == "trained"
    assert d["training"]["schedule"] == "constant" and d["training"]["warmup"] == 0.0
    line = distill_report.training_line(d, d["training"], {"training": 12.0})
    assert "(T = 4, alpha = 0.7) and the true labels" in line and "12 s on 2 thread(s)" in line


def test_rerun_gives_a_byte_identical_student(
    applied: tuple[Path, dict], base: Baseline, tmp_path: Path
) -> None:
    path, d = applied

    again = _apply(base, tmp_path)

    assert (tmp_path / MODEL_FILE).read_bytes() == path.read_bytes()
    assert again["epochs"] == d["epochs"]


def test_a_student_as_deep_as_the_teacher_is_refused(base: Baseline, tmp_path: Path) -> None:
    options = dataclasses.replace(OPTIONS, student={"layers": 2})

    with pytest.raises(ParamsError, match=r"^student = .*not fewer than the teacher's"):
        _apply(base, tmp_path, options)

    assert not (tmp_path / MODEL_FILE).exists()


def test_preset_settings_fill_options_left_at_zero() -> None:
    assert distill.training(distill_options.Options(), minilm.PRESET) == minilm.DISTILL
    assert distill.training(distill_options.Options(epochs=1), minilm.PRESET)["epochs"] == 1
    chosen = distill.training(distill_options.Options(loss="embedding"), minilm.PRESET)
    assert chosen["loss"] == "embedding" and chosen["alpha"] == 1.0
    assert distill.training(distill_options.Options(alpha=0.0), minilm.PRESET)["alpha"] == 0.0
    assert distill.training(distill_options.Options(), digits.PRESET)["alpha"] == 0.7


def test_report_gives_the_training_speed_and_new_failures(applied: tuple[Path, dict]) -> None:
    _, d = applied
    c = {
        "manifest": {"details": d},
        "benchmark": {
            "batches": [
                {
                    "batch_size": 1,
                    "speedup": {"p50": {"estimate": 1.8, "low": 1.7, "high": 1.9}},
                    "effect": "faster",
                    "noise_floor": 0.03,
                }
            ]
        },
        "validation": {
            "overall": {
                "drop_points": 1.0,
                "right_to_wrong": 2,
                "wrong_to_right": 1,
                "baseline_accuracy": {"estimate": 0.75},
                "candidate_accuracy": {"estimate": 0.74},
            }
        },
        "failures": [],
    }

    text = "\n".join(distill.report(c))

    assert "Trained from the teacher's weights" in text and "215 train rows" in text
    assert "the teacher's soft labels (T = 4, alpha = 1) alone" in text
    assert "| epoch | loss | train accuracy | tuning agreement | tuning accuracy |" in text
    assert "Batch 1: speedup p50 1.80x [1.70, 1.90]: faster" in text
    assert "75.0 % -> 74.0 %, accuracy down 1.0 points" in text
    assert f"{d['epochs'][0]['loss']:.4f}" in text


def test_a_shallower_student_changes_only_what_distill_declares(
    applied: tuple[Path, dict], base: Baseline
) -> None:
    from stages.evidence.manifest import changes, confounders
    from stages.onnx_graph import graph_summary

    changed = changes({"graph": graph_summary(base.onnx)}, {"graph": graph_summary(applied[0])})

    assert "graph.dtypes" in changed  # fewer layers: fewer float tensors of each kind
    assert confounders(changed, distill.DECLARES) == []


@pytest.mark.parametrize("name", ["train_logits.npy", "train_embeddings.npy"])
def test_the_kept_train_targets_are_the_teachers_own(base: Baseline, name: str) -> None:
    """What the baseline stage keeps for distill equals a forward pass of the teacher."""
    kept = np.load(base.onnx.parent / name)
    feeds = base.data.feeds("train")
    call = base.module if name == "train_logits.npy" else base.module.embed
    ran = distill_training.forward(call, feeds, minilm.lengths(feeds), minilm.trim)

    assert kept.shape == (268, 2 if name == "train_logits.npy" else 384)
    np.testing.assert_allclose(kept, ran.numpy(), atol=1e-4)


def test_distill_reads_the_kept_logits_and_says_so(applied: tuple[Path, dict]) -> None:
    source = applied[1]["training"]["teacher_targets"]

    assert source == "kept by the baseline stage (train_logits.npy)"


def test_stale_kept_targets_are_refused(tmp_path: Path) -> None:
    from stages.export import TRAIN_LOGITS_FILE
    from stages.storage import EvidenceError

    np.save(tmp_path / TRAIN_LOGITS_FILE, np.zeros((5, 2), dtype=np.float32))

    with pytest.raises(
        EvidenceError, match=r"not one row per train row \(268\).*dvc repro baseline"
    ):
        distill_training.cached(tmp_path, TRAIN_LOGITS_FILE, 268)


def test_held_out_tuning_rows_are_seeded_and_capped() -> None:
    rows = distill_training.held_out(1000, 600, seed=0)

    assert len(rows) == 200 and list(rows) == sorted(set(rows))  # a fifth of the split at most
    assert np.array_equal(rows, distill_training.held_out(1000, 600, seed=0))
    assert not np.array_equal(rows, distill_training.held_out(1000, 600, seed=1))
    assert len(distill_training.held_out(1000, 50, seed=0)) == 50
    assert len(distill_training.held_out(1000, 0, seed=0)) == 0

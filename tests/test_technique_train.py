"""Tests for the training techniques (prune_magnitude, prune_channels, distill) on real digits.

One small baseline (channels [4, 8], hidden 16, 15 epochs: about 93 % validation accuracy) is
trained and exported once per module, with its `model.pt` beside the ONNX file as the baseline
stage writes it. Fidelity bounds, measured against that baseline on the 450 validation rows:
- prune_magnitude, sparsity 0.3, no fine-tune: argmax agreement >= 0.90 (measured 0.98);
- prune_channels, 25 % of the channels, no fine-tune: argmax agreement >= 0.85 (measured 0.93),
  and its logits equal the baseline's with the removed channels zeroed (the rewiring is exact);
- distill into channels [2, 6], hidden 12 (56 % of the teacher's parameters), 20 epochs:
  accuracy at most 3 points below the teacher's (measured 0.7 points).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from torch import nn

from stages.data import Prepared
from stages.evidence.manifest import changes, confounders
from stages.export import MODEL_FILE, WEIGHTS_FILE, export
from stages.models import digits
from stages.onnx_graph import graph_summary
from stages.params import ParamsError
from stages.techniques import distill, prune_channels, prune_magnitude
from stages.techniques.base import Context, NotApplicable
from stages.techniques.options import distill as distill_options
from stages.techniques.options import prune as prune_options
from stages.techniques.torch_tools import count
from stages.training import sample_rows

ROOT = Path(__file__).resolve().parents[1]
TEACHER: dict[str, Any] = {"channels": [4, 8], "hidden": 16, "epochs": 15}
STUDENT: dict[str, Any] = {"channels": [2, 6], "hidden": 12}

# name -> (options, apply, declares)
TECHNIQUES: dict[str, tuple[Any, Callable[[Context], dict[str, Any]], tuple[str, ...]]] = {
    "prune_magnitude": (
        prune_options.MagnitudeOptions(sparsity=0.3, finetune_epochs=0),
        prune_magnitude.apply,
        prune_magnitude.DECLARES,
    ),
    "prune_channels": (
        prune_options.ChannelOptions(amount=0.25, finetune_epochs=0),
        prune_channels.apply,
        prune_channels.DECLARES,
    ),
    "distill": (
        distill_options.Options(student=dict(STUDENT), epochs=20),
        distill.apply,
        distill.DECLARES,
    ),
}


@dataclasses.dataclass(frozen=True)
class Baseline:
    data: Prepared
    params: digits.Params
    onnx: Path
    module: nn.Module


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    params = digits.Params(**TEACHER)
    data = digits.prepare(params, seed=0)
    module, _ = digits.PRESET.train(params, data, seed=0)
    folder = tmp_path_factory.mktemp("baseline")
    export(module, {"image": data.feeds("validation")["image"][:2]}, folder / MODEL_FILE)
    torch.save(module.state_dict(), folder / WEIGHTS_FILE)
    return Baseline(data, params, folder / MODEL_FILE, module)


def _ctx(b: Baseline, options: Any, out: Path, baseline: Path | None = None) -> Context:
    out.mkdir(parents=True, exist_ok=True)
    return Context(baseline or b.onnx, options, b.data, out, 0, digits.PRESET, b.params)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _logits(path: Path, b: Baseline, set_name: str = "validation") -> np.ndarray:
    return _session(path).run(None, b.data.feeds(set_name))[0]


def _io(path: Path) -> dict[str, list[tuple[str, list[Any]]]]:
    s = _session(path)
    return {
        "inputs": [(i.name, list(i.shape)) for i in s.get_inputs()],
        "outputs": [(o.name, list(o.shape)) for o in s.get_outputs()],
    }


Applied = Callable[[str], tuple[Path, dict[str, Any]]]


@pytest.fixture(scope="module")
def applied(base: Baseline, tmp_path_factory: pytest.TempPathFactory) -> Applied:
    """(candidate path, what apply returned) per technique, applied once with the catalog's
    options."""
    cache: dict[str, tuple[Path, dict[str, Any]]] = {}

    def get(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in cache:
            options, apply, _ = TECHNIQUES[name]
            out = tmp_path_factory.mktemp(name)
            cache[name] = out / MODEL_FILE, apply(_ctx(base, options, out))
        return cache[name]

    return get


# --- every technique --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_candidate_is_written_alone_and_keeps_inputs_and_outputs(
    name: str, applied: Applied, base: Baseline
) -> None:
    path, details = applied(name)

    assert [p.name for p in path.parent.iterdir()] == [MODEL_FILE]
    assert details
    assert _io(path) == _io(base.onnx)
    rows = {"image": base.data.feeds("validation")["image"][:5]}
    assert _session(path).run(None, rows)[0].shape == (5, 10)  # the batch axis stays dynamic


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_candidate_stays_within_its_fidelity_bound(
    name: str, applied: Applied, base: Baseline
) -> None:
    path, _ = applied(name)
    labels = base.data.labels("validation")
    before = _logits(base.onnx, base).argmax(1)

    after = _logits(path, base).argmax(1)

    agreement = float((after == before).mean())
    drop = float((before == labels).mean() - (after == labels).mean())
    if name == "prune_magnitude":
        assert agreement >= 0.90
    elif name == "prune_channels":
        assert agreement >= 0.85
    else:
        assert drop <= 0.03


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_candidate_changes_only_declared_fields(
    name: str, applied: Applied, base: Baseline
) -> None:
    path, _ = applied(name)

    changed = changes({"graph": graph_summary(base.onnx)}, {"graph": graph_summary(path)})

    assert "graph.sha256" in changed
    assert "graph.io" not in changed
    assert confounders(changed, TECHNIQUES[name][2]) == []


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("prune_magnitude", prune_options.MagnitudeOptions(sparsity=0.3, finetune_epochs=1)),
        ("prune_channels", prune_options.ChannelOptions(amount=0.25, finetune_epochs=1)),
        ("distill", None),  # the candidate of the other tests, applied once more
    ],
    ids=["prune_magnitude-finetune", "prune_channels-finetune", "distill"],
)
def test_training_is_deterministic(
    name: str, options: Any, base: Baseline, applied: Applied, tmp_path: Path
) -> None:
    _, apply, _ = TECHNIQUES[name]
    if options is None:
        first, first_details = applied(name)
        options = TECHNIQUES[name][0]
    else:
        first_details = apply(_ctx(base, options, tmp_path / "a"))
        first = tmp_path / "a" / MODEL_FILE

    again = apply(_ctx(base, options, tmp_path / "b"))

    assert _untimed(again) == _untimed(first_details)
    assert (tmp_path / "b" / MODEL_FILE).read_bytes() == first.read_bytes()
    if name == "prune_magnitude":  # the masks held through the fine-tune
        assert again["sparsity_reached"] == pytest.approx(0.3, abs=1e-3)
    if name.startswith("prune"):
        assert len(again["finetune"]["epochs"]) == 1


def test_finetune_rows_is_a_seeded_sample_of_the_train_split(
    base: Baseline, tmp_path: Path
) -> None:
    n = len(base.data.labels("train"))
    few = n // 3
    options = prune_options.MagnitudeOptions(sparsity=0.3, finetune_epochs=1, finetune_rows=few)

    details = TECHNIQUES["prune_magnitude"][1](_ctx(base, options, tmp_path / "few"))
    every = TECHNIQUES["prune_magnitude"][1](
        _ctx(base, dataclasses.replace(options, finetune_rows=0), tmp_path / "all")
    )

    assert (details["finetune"]["train_rows"], details["finetune"]["of_train_rows"]) == (few, n)
    assert every["finetune"]["train_rows"] == n
    assert details["finetune"]["epochs"] != every["finetune"]["epochs"]  # other rows, other loss
    lines = prune_magnitude.report(_evidence(details, "faster"))
    assert any(f"on {few:,} of {n:,} train rows" in line for line in lines)
    picked = sample_rows(n, few, seed=0)
    assert len(set(picked)) == few and list(picked) == sorted(picked)
    assert np.array_equal(picked, sample_rows(n, few, seed=0))
    assert not np.array_equal(picked, sample_rows(n, few, seed=1))
    assert np.array_equal(sample_rows(n, 0, seed=0), np.arange(n))
    assert np.array_equal(sample_rows(n, n + 5, seed=0), np.arange(n))


def _untimed(details: dict[str, Any]) -> dict[str, Any]:
    """The details without the measured seconds (distill returns its training time, which
    `optimize` moves to its timing report, out of the model folder)."""
    return {k: v for k, v in details.items() if k != "seconds"}


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_not_applicable_without_torch_weights(name: str, base: Baseline, tmp_path: Path) -> None:
    onnx_only = tmp_path / "onnx_only" / MODEL_FILE
    onnx_only.parent.mkdir()
    shutil.copy(base.onnx, onnx_only)
    options, apply, _ = TECHNIQUES[name]

    with pytest.raises(NotApplicable, match="no torch weights"):
        apply(_ctx(base, options, tmp_path / "out", baseline=onnx_only))
    with pytest.raises(NotApplicable, match="no torch weights"):
        apply(Context(base.onnx, options, base.data, tmp_path / "out", 0))  # no preset

    assert not (tmp_path / "out" / MODEL_FILE).exists()


# --- prune_magnitude --------------------------------------------------------------------------


def test_magnitude_details_measure_the_zeros_in_the_file(applied: Applied, base: Baseline) -> None:
    _, d = applied("prune_magnitude")

    assert d["sparsity_reached"] == pytest.approx(0.3, abs=1e-3)
    assert d["onnx"]["zeros"] == d["zero_weights"]
    assert d["onnx"]["weights"] == d["prunable_weights"]
    assert set(d["per_layer"]) == {"0", "2", "6", "8"}
    assert sum(v["zeros"] for v in d["per_layer"].values()) == d["zero_weights"]
    assert d["parameters"] == sum(p.numel() for p in base.module.parameters())
    assert d["nonzero_parameters"] == d["parameters"] - d["zero_weights"]


# --- prune_channels ---------------------------------------------------------------------------


def test_channels_removes_whole_channels_but_keeps_the_classes(
    applied: Applied, base: Baseline
) -> None:
    path, d = applied("prune_channels")
    base_graph, cand_graph = graph_summary(base.onnx), graph_summary(path)

    assert [(v["layer"], v["before"], v["after"]) for v in d["layers"]] == [
        ("0", 4, 3),
        ("2", 8, 6),
        ("6", 16, 12),
        ("8", 10, 10),
    ]
    assert d["parameters"]["before"] == sum(p.numel() for p in base.module.parameters())
    # the graph also holds the Reshape's shape constant, on both sides alike
    assert (
        cand_graph["parameters"] - d["parameters"]["after"]
        == base_graph["parameters"] - d["parameters"]["before"]
    )
    assert d["parameters"]["after"] < d["parameters"]["before"]


def test_channels_rewiring_equals_the_baseline_with_those_channels_zeroed(
    applied: Applied, base: Baseline
) -> None:
    """Removing a channel (and its inputs downstream, through the flatten) must compute exactly
    what the baseline computes with that channel's weights and bias set to zero."""
    path, _ = applied("prune_channels")
    zeroed = digits.build(base.params, 10)
    zeroed.load_state_dict(base.module.state_dict())
    with torch.no_grad():
        for i in (0, 2, 6):  # every weighted layer but the last
            layer = zeroed.get_submodule(str(i))
            assert isinstance(layer, nn.Conv2d | nn.Linear)
            scores = layer.weight.abs().flatten(1).sum(1)
            drop = torch.argsort(-scores, stable=True)[len(scores) - round(0.25 * len(scores)) :]
            layer.weight[drop] = 0
            assert layer.bias is not None
            layer.bias[drop] = 0
        expected = zeroed.eval()(torch.from_numpy(base.data.feeds("validation")["image"]))

    np.testing.assert_allclose(_logits(path, base), expected.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        (
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(4, 4, 3, padding=1, groups=2),
                nn.Flatten(),
                nn.Linear(256, 10),
            ),
            "grouped",
        ),
        (lambda: _Residual(), "nn.Sequential"),
    ],
    ids=["grouped-conv", "not-sequential"],
)
def test_channels_refuses_architectures_it_cannot_rewire(
    module: Callable[[], nn.Module], reason: str, base: Baseline, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = module()
    (tmp_path / "b").mkdir()
    shutil.copy(base.onnx, tmp_path / "b" / MODEL_FILE)
    torch.save(model.state_dict(), tmp_path / "b" / WEIGHTS_FILE)
    preset: Any = ModuleType("unsupported_preset")
    preset.build = lambda _p, _n: module()
    ctx = Context(
        tmp_path / "b" / MODEL_FILE,
        prune_options.ChannelOptions(),
        base.data,
        tmp_path,
        0,
        preset,
        None,
    )

    with pytest.raises(NotApplicable, match=reason):
        prune_channels.apply(ctx)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x + self.conv(x)).flatten(1))


# --- distill ----------------------------------------------------------------------------------


def test_distill_details_name_the_student_and_its_loss(applied: Applied, base: Baseline) -> None:
    _, d = applied("distill")
    student = digits.build(dataclasses.replace(base.params, **STUDENT), 10)

    assert d["student"] == STUDENT
    assert d["parameters"]["teacher"] == sum(p.numel() for p in base.module.parameters())
    assert d["parameters"]["student"] == sum(p.numel() for p in student.parameters())
    assert [e["epoch"] for e in d["epochs"]] == list(range(1, 21))
    assert d["epochs"][-1]["loss"] < d["epochs"][0]["loss"]


def test_distill_apply_refuses_a_student_that_is_not_smaller(
    base: Baseline, tmp_path: Path
) -> None:
    options = distill_options.Options(student={"channels": [4, 8]})  # the teacher's own widths

    with pytest.raises(ParamsError, match=r"^student = .*not fewer than the teacher's"):
        distill.apply(_ctx(base, options, tmp_path))

    assert not (tmp_path / MODEL_FILE).exists()


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: prune_options.MagnitudeOptions(sparsity=1.0), r"^sparsity = 1\.0 .*\[0, 1\)"),
        (lambda: prune_options.MagnitudeOptions(sparsity=-0.1), r"^sparsity = -0\.1 .*\[0, 1\)"),
        (
            lambda: prune_options.MagnitudeOptions(finetune_epochs=-1),
            r"^finetune_epochs = -1 .*>= 0",
        ),
        (lambda: prune_options.ChannelOptions(amount=1.0), r"^amount = 1\.0 .*\[0, 1\)"),
        (lambda: prune_options.ChannelOptions(norm="l3"), r"^norm = 'l3' .*l1, l2"),
        (lambda: prune_options.ChannelOptions(learning_rate=0), r"^learning_rate = 0 .*> 0"),
        (lambda: distill_options.Options(temperature=0), r"^temperature = 0 .*> 0"),
        (lambda: distill_options.Options(alpha=1.5), r"^alpha = 1\.5 .*\[0, 1\]"),
        (lambda: distill_options.Options(epochs=-1), r"^epochs = -1 .*>= 1, or 0"),
    ],
    ids=[
        "sparsity-1",
        "sparsity-negative",
        "finetune-negative",
        "amount-1",
        "norm-l3",
        "lr-0",
        "temperature-0",
        "alpha-1.5",
        "epochs-negative",
    ],
)
def test_bad_options_are_refused_naming_the_allowed_values(
    make: Callable[[], Any], match: str
) -> None:
    with pytest.raises(ParamsError, match=match):
        make()


@pytest.mark.parametrize(
    ("student", "match"),
    [
        ({"channels": [8, 16], "hidden": 32}, r"^student = .*not fewer than the teacher's 2,570"),
        ({"width": 3}, r"^student has unknown key\(s\) width; allowed keys .*channels, hidden"),
        ({"channels": [4]}, r"^student\.channels = \[4\] .*two conv widths"),
    ],
    ids=["larger", "unknown-key", "bad-value"],
)
def test_distill_apply_refuses_bad_students(
    base: Baseline, student: dict[str, Any], match: str, tmp_path: Path
) -> None:
    """Checked where distill applies (params validation builds no model)."""
    with pytest.raises(ParamsError, match=match):
        distill.apply(_ctx(base, distill_options.Options(student=student), tmp_path))

    assert not (tmp_path / MODEL_FILE).exists()


def test_distill_default_student_is_smaller() -> None:
    teacher = digits.Params()  # the conf/ defaults
    student = distill.student_params(distill_options.Options(), teacher)

    assert count(digits.build(student, 10)) < count(digits.build(teacher, 10))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("prune_magnitude", prune_options.MagnitudeOptions),
        ("prune_channels", prune_options.ChannelOptions),
        ("distill", distill_options.Options),
    ],
)
def test_conf_defaults_match_the_options_dataclasses(name: str, options: type) -> None:
    raw = yaml.safe_load((ROOT / "conf" / "technique" / f"{name}.yaml").read_text())

    assert list(raw) == [name]
    assert options(**raw[name]) == options()


# --- the review note --------------------------------------------------------------------------


def _evidence(details: dict[str, Any], effect: str) -> dict[str, Any]:
    def ci(x: float) -> dict[str, float]:
        return {"estimate": x, "low": x - 0.02, "high": x + 0.02}

    def acc(x: float) -> dict[str, float]:
        return {"estimate": x, "low": x - 0.05, "high": x + 0.05}

    return {
        "manifest": {"details": details},
        "benchmark": {
            "batches": [
                {
                    "batch_size": bs,
                    "speedup": {"p50": ci(1.01), "p95": ci(0.98), "p99": ci(1.04)},
                    "effect": effect,
                    "noise_floor": 0.05,
                }
                for bs in (1, 32)
            ]
        },
        "validation": {
            "overall": {"drop_points": 0.4, "right_to_wrong": 3, "wrong_to_right": 1},
            "slices": {
                "class_3": {
                    "drop_points": 2.2,
                    "right_to_wrong": 1,
                    "wrong_to_right": 0,
                    "baseline_accuracy": acc(0.978),
                    "candidate_accuracy": acc(0.956),
                },
                "low_light": {
                    "drop_points": 0.0,
                    "right_to_wrong": 2,
                    "wrong_to_right": 2,
                    "baseline_accuracy": acc(0.78),
                    "candidate_accuracy": acc(0.78),
                },
            },
            "worst_slice": "class_3",
        },
        "failures": [
            {
                "kind": "right_to_wrong",
                "set": "low_light",
                "index": 96,
                "label": 9,
                "candidate_pred": 7,
                "file": "001_right_to_wrong_low_light_96_true9_cand7.png",
            },
            {
                "kind": "still_wrong",
                "set": "validation",
                "index": 5,
                "label": 1,
                "candidate_pred": 8,
                "file": "002_still_wrong_validation_5_true1_cand8.png",
            },
        ],
    }


def test_magnitude_report_puts_the_sparsity_beside_the_speedup(applied: Applied) -> None:
    _, d = applied("prune_magnitude")

    lines = prune_magnitude.report(_evidence(d, "no measurable change"))
    text = "\n".join(lines)

    assert f"{d['sparsity_reached'] * 100:.1f} %" in text
    assert "p50 1.01x [0.99, 1.03]" in text and "no measurable change" in text
    assert "sparse but not faster: dense kernels do the same work on zeros" in text.lower()
    assert "Overall: accuracy down 0.4 points, 3 right->wrong, 1 wrong->right" in text
    faster = "\n".join(prune_magnitude.report(_evidence(d, "faster"))).lower()
    assert "sparse but not faster" not in faster


def test_channels_report_gives_parameters_speed_and_slices(applied: Applied) -> None:
    _, d = applied("prune_channels")

    text = "\n".join(prune_channels.report(_evidence(d, "slower")))

    p = d["parameters"]
    assert f"{p['before']:,} -> {p['after']:,}" in text
    assert "0 (Conv2d) 4 -> 3" in text
    assert "Batch 32: speedup p50 1.01x" in text
    assert "Slice class_3 (worst slice): 97.8 % -> 95.6 %, accuracy down 2.2 points" in text


def test_distill_report_lists_new_failures_by_slice(applied: Applied) -> None:
    _, d = applied("distill")

    text = "\n".join(distill.report(_evidence(d, "faster")))

    p = d["parameters"]
    assert f"{p['student']:,} parameters against the teacher's {p['teacher']:,}" in text
    assert f"{d['epochs'][-1]['loss']:.4f}" in text
    assert "Slice class_3 (worst slice)" in text and "1 right->wrong" in text
    assert "New failures in low_light: 1" in text
    assert "#96 9->7 (`001_right_to_wrong_low_light_96_true9_cand7.png`)" in text
    assert "still_wrong" not in text

"""Graph techniques (fp16, fuse): the candidate loads, keeps its inputs/outputs, stays within a
stated fidelity bound of the baseline, changes only what it declares; bad options are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import helper, numpy_helper

from stages import params as config
from stages.data import Prepared
from stages.evidence.manifest import changes, confounders
from stages.onnx_graph import graph_summary
from stages.runtime import check_model
from stages.stats import cosine_similarity, max_abs_error
from stages.techniques import fp16, fuse
from stages.techniques.base import Context, NotApplicable
from stages.techniques.options import fp16 as fp16_options
from stages.techniques.options import fuse as fuse_options

ROOT = Path(__file__).resolve().parents[1]
FP16_MIN_COSINE, FP16_MAX_ABS = 0.999, 1e-2
FUSE_MAX_ABS = 1e-4


def _ctx(baseline: Path, options: Any, data: Prepared, out: Path) -> Context:
    out.mkdir(parents=True, exist_ok=True)
    return Context(baseline, options, data, out, seed=0)


def _run(path: Path, data: Prepared, level: str = "all") -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, data.feeds("validation"))[0]


def _same_io(base: Path, cand: Path) -> None:
    """A valid ONNX file (as the optimize stage checks it: e.g. nodes in topological order) with
    the baseline's input/output names, dtypes and shapes, in the file and in a live session."""
    check_model(cand, "test")
    assert graph_summary(cand)["io"] == graph_summary(base)["io"]
    a = ort.InferenceSession(str(base), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(cand), providers=["CPUExecutionProvider"])
    for x, y in ((a.get_inputs(), b.get_inputs()), (a.get_outputs(), b.get_outputs())):
        assert [(v.name, v.type, v.shape) for v in x] == [(v.name, v.type, v.shape) for v in y]
    assert b.get_inputs()[0].type == "tensor(float)" and b.get_outputs()[0].type == "tensor(float)"


def _undeclared(base: Path, cand: Path, declares: tuple[str, ...]) -> list[str]:
    changed = changes({"graph": graph_summary(base)}, {"graph": graph_summary(cand)})
    assert changed, "the candidate should differ from the baseline"
    return confounders(changed, declares)


def _with_batchnorm(tiny_onnx: Path, out: Path, conv_bias: bool) -> Path:
    """The pipeline-exported tiny model with a BatchNormalization inserted after its Conv.

    The pipeline's exporter (torch dynamo + onnxscript optimizer) already folds eval-mode
    BatchNorm into the Conv (see test_pipeline_export_already_folds_batchnorm), so the pair is
    built in the ONNX graph, with running statistics far from identity.
    """
    model = onnx.load(str(tiny_onnx))
    g = model.graph
    (conv,) = [n for n in g.node if n.op_type == "Conv"]
    channels = next(i for i in g.initializer if i.name == conv.input[1]).dims[0]
    if not conv_bias:
        del conv.input[2:]
    rng = np.random.default_rng(1)
    stats = {
        "bn.scale": rng.uniform(0.5, 2.0, channels),
        "bn.bias": rng.uniform(-1.0, 1.0, channels),
        "bn.mean": rng.uniform(-0.5, 0.5, channels),
        "bn.var": rng.uniform(0.2, 3.0, channels),
    }
    g.initializer.extend(numpy_helper.from_array(v.astype(np.float32), k) for k, v in stats.items())
    pre_bn = conv.output[0] + "_pre_bn"
    bn = helper.make_node(
        "BatchNormalization", [pre_bn, *stats], [conv.output[0]], name="bn", epsilon=1e-5
    )
    conv.output[0] = pre_bn
    nodes = list(g.node)
    nodes.insert(nodes.index(conv) + 1, bn)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    path = out / ("bn_bias.onnx" if conv_bias else "bn_nobias.onnx")
    onnx.save(model, str(path))
    return path


# --- fp16 ---------------------------------------------------------------------------------------


def test_fp16_loads_keeps_io_and_stays_close(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(tiny_onnx, fp16_options.Options(), tiny_data, tmp_path)
    details = fp16.apply(ctx)

    _same_io(tiny_onnx, ctx.model_out)
    ref, got = _run(tiny_onnx, tiny_data), _run(ctx.model_out, tiny_data)
    assert cosine_similarity(ref, got) >= FP16_MIN_COSINE
    assert max_abs_error(ref, got) <= FP16_MAX_ABS
    assert details["casts_added"] == 2  # one at the float32 input, one at the float32 output
    assert details["float16_initializers"] == 4  # conv and linear weights and biases
    assert details["float32_initializers_left"] == 0
    assert graph_summary(ctx.model_out)["dtypes"].get("float16") == 4
    k = details["kernels"]
    assert k["provider"] == "CPUExecutionProvider"
    assert set(k["native_fp16"]) | set(k["cast_to_fp32"]) >= {"Conv", "Gemm"}


def test_fp16_changes_stay_within_declares(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(tiny_onnx, fp16_options.Options(), tiny_data, tmp_path)
    fp16.apply(ctx)

    assert _undeclared(tiny_onnx, ctx.model_out, fp16.DECLARES) == []
    assert "graph.io" not in fp16.DECLARES


def test_fp16_op_block_list_keeps_those_ops_in_float32(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(tiny_onnx, fp16_options.Options(op_block_list=["Gemm"]), tiny_data, tmp_path)
    details = fp16.apply(ctx)

    _same_io(tiny_onnx, ctx.model_out)
    assert details["float32_initializers_left"] == 2  # the Gemm's weight and bias
    assert details["casts_added"] > 2  # casts around the float32 Gemm as well


# --- fuse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", fuse_options.LEVELS)
def test_fuse_ort_offline_loads_keeps_io_and_matches(
    level: str, tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(tiny_onnx, fuse_options.Options(level=level), tiny_data, tmp_path)
    details = fuse.apply(ctx)

    _same_io(tiny_onnx, ctx.model_out)
    assert max_abs_error(_run(tiny_onnx, tiny_data), _run(ctx.model_out, tiny_data)) <= FUSE_MAX_ABS
    assert details["max_abs_error"] <= FUSE_MAX_ABS
    assert details["verified_on"] == "CPUExecutionProvider"
    assert details["rows"] == len(tiny_data.labels("validation"))
    assert details["nodes_removed"] == details["nodes_before"] - details["nodes_after"]
    assert sum(details["ops_after"].values()) == details["nodes_after"]
    assert (
        confounders(
            changes({"graph": graph_summary(tiny_onnx)}, {"graph": graph_summary(ctx.model_out)}),
            fuse.DECLARES,
        )
        == []
    )
    if level != "basic":  # Conv+Relu is fused from level extended on
        assert "Relu" not in details["ops_after"]
        assert any(op.startswith("com.microsoft") for op in details["custom_domain_ops"])
    assert details["hardware_specific"] == any("nchwc" in op for op in details["ops_after"])


@pytest.mark.parametrize("conv_bias", [True, False], ids=["conv_bias", "no_conv_bias"])
def test_fold_batchnorm_folds_the_pair_and_matches(
    conv_bias: bool, tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    base = _with_batchnorm(tiny_onnx, tmp_path, conv_bias)
    ctx = _ctx(base, fuse_options.Options(method="fold_batchnorm"), tiny_data, tmp_path / "out")
    details = fuse.apply(ctx)

    _same_io(base, ctx.model_out)
    after = graph_summary(ctx.model_out)
    assert "BatchNormalization" not in after["op_types"]
    assert details["pairs_folded"] == 1 and details["nodes_removed"] == 1
    assert after["parameters"] < graph_summary(base)["parameters"]  # BN statistics are gone
    ref = _run(base, tiny_data, "disable")  # the unfolded graph, as written
    assert max_abs_error(ref, _run(ctx.model_out, tiny_data, "disable")) <= FUSE_MAX_ABS
    assert details["max_abs_error"] <= FUSE_MAX_ABS
    assert _undeclared(base, ctx.model_out, fuse.DECLARES) == []
    text = "\n".join(fuse.report(_evidence(details, "no measurable change", 1.0)))
    assert "method: fold_batchnorm" in text and "pairs folded: 1" in text
    assert "BatchNormalization 1" in text  # in the op counts before


def test_fold_batchnorm_without_batchnorm_is_not_applicable(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    ctx = _ctx(tiny_onnx, fuse_options.Options(method="fold_batchnorm"), tiny_data, tmp_path)

    with pytest.raises(NotApplicable, match=r"no Conv\+BatchNormalization pair to fold"):
        fuse.apply(ctx)
    assert not ctx.model_out.exists()


def test_pipeline_export_already_folds_batchnorm(tiny_data: Prepared, tmp_path: Path) -> None:
    """A torch Conv+BatchNorm exported by the pipeline arrives folded: nothing left to fold."""
    import torch

    from stages.export import export

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 64, 4),
    ).eval()
    path = tmp_path / "model.onnx"
    export(module, {"image": tiny_data.sets["validation"]["image"][:2]}, path)
    assert "BatchNormalization" not in graph_summary(path)["op_types"]

    ctx = _ctx(path, fuse_options.Options(method="fold_batchnorm"), tiny_data, tmp_path / "out")
    with pytest.raises(NotApplicable, match="no Conv"):
        fuse.apply(ctx)


def test_fuse_fails_when_outputs_leave_the_bound(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    base = _with_batchnorm(tiny_onnx, tmp_path, conv_bias=True)
    options = fuse_options.Options(method="fold_batchnorm", tolerance=1e-30)
    ctx = _ctx(base, options, tiny_data, tmp_path / "out")

    with pytest.raises(fuse.FusionError, match=r"above technique\.fuse\.tolerance = 1e-30"):
        fuse.apply(ctx)


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "raw", "match"),
    [
        (fuse, {"level": "max"}, r"technique\.fuse\.level = 'max'.*basic, extended, all"),
        (fuse, {"method": "magic"}, r"technique\.fuse\.method = 'magic'.*ort_offline, fold_batch"),
        (fuse, {"tolerance": 0.0}, r"technique\.fuse\.tolerance = 0\.0.*> 0"),
        (fuse, {"levels": "all"}, r"technique\.fuse\.levels.*Allowed keys here: method, level"),
        (fp16, {"keep_io_types": False}, r"technique\.fp16\.keep_io_types = False.*true"),
        (fp16, {"op_block_list": [""]}, r"technique\.fp16\.op_block_list"),
    ],
    ids=["level", "method", "tolerance", "unknown_key", "keep_io_types", "empty_op"],
)
def test_bad_options_are_refused_with_the_allowed_values(
    module: Any, raw: dict[str, Any], match: str
) -> None:
    name = module.__name__.rsplit(".", 1)[-1]
    with pytest.raises(config.ParamsError, match=match):
        config._structured(module.Options, raw, f"technique.{name}.")


@pytest.mark.parametrize("module", [fp16, fuse], ids=["fp16", "fuse"])
def test_yaml_defaults_equal_the_options_defaults(module: Any) -> None:
    name = module.__name__.rsplit(".", 1)[-1]
    conf = yaml.safe_load((ROOT / "conf" / "technique" / f"{name}.yaml").read_text())
    assert list(conf) == [name]
    assert conf[name] == dataclasses.asdict(module.Options())
    assert config._structured(module.Options, conf[name], f"technique.{name}.") == module.Options()


# --- report -------------------------------------------------------------------------------------


def _evidence(details: dict[str, Any], effect: str, p50: float) -> dict[str, Any]:
    """The minimal evidence a technique's report reads, with recognisable figures."""

    def ci(x: float) -> dict[str, float]:
        return {"estimate": x, "low": round(x - 0.011, 3), "high": round(x + 0.013, 3)}

    return {
        "manifest": {"details": details, "graph": {"op_types": {}}},
        "benchmark": {
            "batches": [
                {
                    "batch_size": 1,
                    "speedup": {q: ci(p50) for q in ("p50", "p95", "p99", "mean")},
                    "effect": effect,
                    "noise_floor": 0.031,
                }
            ],
            "sessions": {"candidate": {"provider": "CPUExecutionProvider"}},
            "session": {"graph_optimization_level": "all"},
            "load_ms": {"baseline": 12.34, "candidate": 5.67},
        },
        "validation": {
            "overall": {"drop_points": 0.22, "right_to_wrong": 3},
            "fidelity": {"max_abs_error": 0.00449, "cosine": 0.99998, "sqnr_db": 77.5},
            "slices": {"class_3": {"drop_points": 1.75}, "low_light": {"drop_points": 0.5}},
        },
    }


def test_fp16_report_states_casts_kernels_and_speed(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    details = fp16.apply(_ctx(tiny_onnx, fp16_options.Options(), tiny_data, tmp_path))
    details["kernels"] = {
        "provider": "CPUExecutionProvider",
        "runtime_casts": 7,
        "native_fp16": [],
        "cast_to_fp32": ["Conv", "Gemm"],
        "at_level_all": {"casts": 1, "float16_initializers": 0},
    }
    text = "\n".join(fp16.report(_evidence(details, "slower", 0.834)))

    assert "Cast nodes added to the graph: 2" in text
    assert "float16 initializers: 4" in text
    assert "0.834 [0.823, 0.847]" in text and "**slower**" in text
    assert "+0.22 points" in text and "class_3 +1.75" in text and "3 right->wrong" in text
    assert "0.00449" in text and "0.99998" in text and "77.5 dB" in text
    assert "runs Conv, Gemm in float32" in text and "+7 Cast" in text
    assert "finally runs has 1 Cast node(s) and 0 float16 initializer(s)" in text
    assert "the candidate is slower" in text and "no native float16 kernel" in text


def test_fuse_report_states_support_counts_bound_and_load_times(
    tiny_onnx: Path, tiny_data: Prepared, tmp_path: Path
) -> None:
    details = fuse.apply(_ctx(tiny_onnx, fuse_options.Options(level="all"), tiny_data, tmp_path))
    text = "\n".join(fuse.report(_evidence(details, "no measurable change", 1.004)))

    assert "ort_offline at level all" in text
    assert f"{details['nodes_before']} -> {details['nodes_after']} nodes" in text
    assert "Conv 1" in text  # the op counts before
    assert "CPUExecutionProvider" in text and f"{details['rows']} validation rows" in text
    assert f"{details['max_abs_error']:.3g}" in text and "within the bound 0.0001" in text
    assert "12.3 ms -> 5.7 ms" in text and "1.004 [0.993, 1.017]" in text
    assert "online optimizations at graph_optimization_level=all" in text
    if details["hardware_specific"]:
        assert "NCHWc" in text

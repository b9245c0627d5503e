"""The params.yaml schema: every stage loads and validates it before doing any work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stages.errors import ParamsError, closest, one_of, require
from stages.models.options import PARAMS
from stages.techniques.options import OPTIONS

PARAMS_FILE = Path("params.yaml")
GRAPH_LEVELS = ("disable", "basic", "extended", "all")
SCENARIOS = ("single_stream", "server", "offline")


@dataclass
class Paths:
    host: str = "reports/host.json"
    host_numerics: str = "reports/host/numerics.json"
    host_timing: str = "reports/host/timing.json"
    peak: str = "reports/peak.json"
    data: str = "data/prepared"
    baseline: str = "models/baseline"
    control: str = "models/control"  # the control stack built from the baseline
    candidates: str = "models/candidates"
    optimize_log: str = "reports/optimize"  # each optimize@'s wall-clock seconds (not in models/)
    reference: str = "reports/reference"
    benchmark: str = "reports/benchmark"
    validation: str = "reports/validation"
    failures: str = "reports/failures"
    review: str = "reports/review"
    dashboard: str = "reports/dashboard.md"
    tradeoff: str = "reports/tradeoff.png"
    summary: str = "reports/summary.json"
    tracking: str = "reports/tracking.json"
    ladder: str = "reports/ladder"  # make climb: each rung's notes and figures
    ladder_report: str = "reports/ladder.md"
    ladder_plot: str = "reports/ladder.png"


@dataclass
class Target:
    name: str = "cpu"
    provider: str = "CPUExecutionProvider"
    intra_op_threads: int = 0  # 0 = one per physical core
    inter_op_threads: int = 1
    allow_spinning: bool = False
    graph_optimization_level: str = "all"

    def __post_init__(self) -> None:
        require(
            self.intra_op_threads >= 0, "target.intra_op_threads", self.intra_op_threads, ">= 0"
        )
        require(
            self.inter_op_threads >= 1, "target.inter_op_threads", self.inter_op_threads, ">= 1"
        )
        one_of("target.graph_optimization_level", self.graph_optimization_level, GRAPH_LEVELS)


@dataclass
class Bench:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    warmup_calls: int = 50
    calls_per_block: int = 20
    min_rounds: int = 12
    max_rounds: int = 400
    sessions: int = 5  # worker processes per timing, each with its own session of every side
    max_seconds: float = 17.0
    # the cap for the timings the verdict does not weigh (larger batches, a preset's fixed-shape
    # inputs): reported with their intervals, never judged
    report_seconds: float = 3.0
    precision: float = 0.02
    max_noise_floor: float = 0.1  # a timing decision needs the A/A noise floor at most this wide
    confidence: float = 0.95
    bootstrap_resamples: int = 2000
    memory_calls: int = 50
    load_repeats: int = 5
    scenarios: list[str] = field(default_factory=lambda: ["single_stream"])
    server_duration_s: float = 0.6  # s per server rate, side and replicate
    server_replicates: int = 3  # serving sweeps on fresh arrival seeds; the verdict needs >= 3
    server_refine_steps: int = 3  # bisections of each sweep's saturation bracket
    server_load_factors: list[float] = field(default_factory=lambda: [0.5, 0.9, 1.5])
    server_sweep_factors: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]
    )
    latency_bound_ms: float = 0.0  # p99 bound under load; 0 = 10 x the baseline's p50, >= 5 ms
    offline_requests: int = 1000

    def __post_init__(self) -> None:
        for s in self.scenarios:
            one_of("bench.scenarios", s, SCENARIOS)
        require(
            self.server_duration_s > 0, "bench.server_duration_s", self.server_duration_s, "> 0"
        )
        require(
            self.server_replicates >= 1, "bench.server_replicates", self.server_replicates, ">= 1"
        )
        require(
            self.server_refine_steps >= 0,
            "bench.server_refine_steps",
            self.server_refine_steps,
            ">= 0",
        )
        for name in ("server_load_factors", "server_sweep_factors"):
            values = getattr(self, name)
            require(bool(values) and min(values) > 0, f"bench.{name}", values, "factors > 0")
        require(self.latency_bound_ms >= 0, "bench.latency_bound_ms", self.latency_bound_ms, ">= 0")
        require(self.offline_requests >= 1, "bench.offline_requests", self.offline_requests, ">= 1")
        require(bool(self.batch_sizes), "bench.batch_sizes", self.batch_sizes, "at least one")
        for b in self.batch_sizes:
            require(b >= 1, "bench.batch_sizes", self.batch_sizes, "sizes >= 1")
        require(self.batch_sizes[0] == 1, "bench.batch_sizes", self.batch_sizes, "1 first")
        require(self.calls_per_block >= 1, "bench.calls_per_block", self.calls_per_block, ">= 1")
        require(self.min_rounds >= 2, "bench.min_rounds", self.min_rounds, ">= 2")
        require(self.sessions >= 1, "bench.sessions", self.sessions, ">= 1")
        require(self.report_seconds > 0, "bench.report_seconds", self.report_seconds, "> 0")
        require(
            self.max_rounds >= self.min_rounds, "bench.max_rounds", self.max_rounds, ">= min_rounds"
        )
        require(self.max_seconds > 0, "bench.max_seconds", self.max_seconds, "> 0")
        require(0 < self.precision < 1, "bench.precision", self.precision, "in (0, 1)")
        require(
            self.max_noise_floor > 0,
            "bench.max_noise_floor",
            self.max_noise_floor,
            "> 0 (0.1 = 10 %)",
        )
        require(0 < self.confidence < 1, "bench.confidence", self.confidence, "in (0, 1)")
        require(
            self.bootstrap_resamples >= 100,
            "bench.bootstrap_resamples",
            self.bootstrap_resamples,
            ">= 100",
        )
        require(self.warmup_calls >= 0, "bench.warmup_calls", self.warmup_calls, ">= 0")
        require(self.memory_calls >= 1, "bench.memory_calls", self.memory_calls, ">= 1")
        require(self.load_repeats >= 1, "bench.load_repeats", self.load_repeats, ">= 1")


@dataclass
class Budget:
    max_accuracy_drop: float = 1.0  # percentage points
    max_worst_slice_drop: float = 3.0  # percentage points
    min_speedup: float = 1.10  # p50, batch 1, lower bound of the interval
    max_p99_slowdown: float = 1.10  # factor
    alpha: float = 0.05
    # every output but the label one: max abs error as a share of that output's range on the
    # baseline (max - min over the validation rows); 0.05 = 5 % of the range
    max_output_error: float = 0.05

    def __post_init__(self) -> None:
        drop = "a drop in percentage points, >= 0 (1.0 = one point)"
        require(
            self.max_accuracy_drop >= 0, "budget.max_accuracy_drop", self.max_accuracy_drop, drop
        )
        require(
            self.max_worst_slice_drop >= 0,
            "budget.max_worst_slice_drop",
            self.max_worst_slice_drop,
            drop,
        )
        require(self.min_speedup > 0, "budget.min_speedup", self.min_speedup, "a ratio > 0")
        require(
            self.max_p99_slowdown >= 1, "budget.max_p99_slowdown", self.max_p99_slowdown, ">= 1"
        )
        require(0 < self.alpha < 1, "budget.alpha", self.alpha, "in (0, 1)")
        require(
            self.max_output_error >= 0,
            "budget.max_output_error",
            self.max_output_error,
            "a share of each output's baseline range, >= 0 (0.05 = 5 %)",
        )


@dataclass
class _Raw:
    """The top level as OmegaConf checks it; model and technique bodies are checked per name."""

    seed: int = 0
    paths: Paths = field(default_factory=Paths)
    model: dict[str, Any] = field(default_factory=dict)
    target: Target = field(default_factory=Target)
    technique: dict[str, Any] = field(default_factory=dict)
    bench: Bench = field(default_factory=Bench)
    budget: Budget = field(default_factory=Budget)
    control: dict[str, Any] = field(default_factory=dict)


@dataclass
class Params:
    seed: int
    paths: Paths
    model_name: str
    model: Any  # the preset's own dataclass, e.g. stages.models.options.DigitsParams
    target: Target
    technique: dict[str, Any]  # technique name -> its options dataclass
    bench: Bench
    budget: Budget
    # the control stack: the shipped techniques in order -> their options; {} = the baseline
    control: dict[str, Any] = field(default_factory=dict)


def validate(raw: dict[str, Any]) -> Params:
    """Check a params mapping against the schema; raise ParamsError naming field and fix."""
    top = _structured(_Raw, raw, "")
    model_raw = dict(top.model)
    name = model_raw.pop("name", None)
    one_of("model.name", name, sorted(PARAMS))
    model = _structured(PARAMS[name], model_raw, "model.")
    if not top.technique:
        raise ParamsError(
            f"technique: no technique selected; pick one or more of {sorted(OPTIONS)}, "
            "e.g. dvc exp run -S 'technique=[int8_dynamic]'"
        )
    techniques = _options("technique", top.technique, model)
    control = _options("control", top.control, model)
    return Params(
        top.seed, top.paths, name, model, top.target, techniques, top.bench, top.budget, control
    )


def _options(section: str, raw: dict[str, Any], model: Any) -> dict[str, Any]:
    """Each named technique's options under `section` (technique, control), validated, in
    order."""
    out = {}
    for tname, options in raw.items():
        one_of(section, tname, sorted(OPTIONS))
        _check_calibration(f"{section}.{tname}", dict(options or {}), model)
        out[tname] = _structured(OPTIONS[tname], dict(options or {}), f"{section}.{tname}.")
    return out


def load(path: Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the repository root, or `make params`")
    with path.open() as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} is not a mapping of params; recompose it with `make params`")
    return validate(raw)


def as_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts (for evidence files and MLflow params)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def _structured(schema: type, raw: dict[str, Any], where: str) -> Any:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
        return OmegaConf.to_object(merged)
    except ParamsError as e:
        raise ParamsError(f"{where}{e}") from None
    except OmegaConfBaseException as e:
        full_key = getattr(e, "full_key", "") or ""
        key = f"{where}{full_key}" if full_key else where.rstrip(".")
        allowed = ", ".join(f.name for f in dataclasses.fields(_schema_at(schema, full_key)))
        msg = str(e).splitlines()[0]
        raise ParamsError(
            f"{key}: {msg}. Allowed keys here: {allowed}. Fix conf/ and recompose params.yaml "
            "(`make params` or `dvc exp run -S ...`)"
        ) from None


def _schema_at(schema: type, full_key: str) -> type:
    """The dataclass that holds the last part of a dotted key (for listing its allowed fields)."""
    for part in full_key.split(".")[:-1]:
        types = {f.name: f.type for f in dataclasses.fields(schema)}
        inner = globals().get(str(types.get(part)))
        if not (isinstance(inner, type) and dataclasses.is_dataclass(inner)):
            break
        schema = inner
    return schema


def _check_calibration(where: str, options: dict[str, Any], model: Any) -> None:
    """A technique's calibration_size fits the calibration split, which holds exactly
    model.calibration_size rows (presets that size it by a share know it only after prepare)."""
    size, most = options.get("calibration_size"), getattr(model, "calibration_size", None)
    if type(size) is not int or type(most) is not int:
        # a wrong type is the schema's to report; a share-sized split is checked when applied
        return
    require(
        1 <= size <= most,
        f"{where}.calibration_size",
        size,
        f">= 1 and <= {most}, the rows of the calibration split (model.calibration_size = "
        f"{most}); lower it, e.g. -S {where}.calibration_size={most}, or raise "
        "model.calibration_size",
    )


def check_overrides(overrides: list[str], conf: Path = Path("conf")) -> None:
    """Refuse a technique override naming no conf/technique/*.yaml, before Hydra composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    available = sorted(p.stem for p in (conf / "technique").glob("*.yaml"))
    for o in OverridesParser.create().parse_overrides(overrides):
        # `technique@control=[...]` (the control stack) is the same group: the same check
        if o.key_or_group != "technique" or o.is_delete() or o.is_sweep_override():
            continue  # Hydra refuses sweeps itself, and lists the options of other groups
        value = o.value()
        for name in value if isinstance(value, list) else [value]:
            if str(name) not in available:
                raise ParamsError(
                    f"technique = {name!r} is unknown: there is no conf/technique/{name}.yaml"
                    f"{closest(name, available)}; choose from the files there: "
                    f"{', '.join(available)}"
                )


def compose(overrides: list[str] | None = None, conf: Path = Path("conf")) -> dict[str, Any]:
    """Compose conf/ with Hydra, as `dvc exp run -S` does, into a plain params mapping."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    check_overrides(overrides or [], conf)
    with initialize_config_dir(str(conf.resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]

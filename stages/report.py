"""Stage `report`: the verdicts, review notes, dashboard, trade-off plot and MLflow runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

from stages import params as config
from stages import stack, tracking
from stages.cli import run
from stages.evidence import manifest
from stages.evidence.dashboard import dashboard
from stages.evidence.formats import largest_batch
from stages.evidence.records import TimingEvidence, ValidationEvidence, candidate_evidence
from stages.evidence.review import review
from stages.evidence.rule import as_dicts
from stages.evidence.tradeoff import tradeoff_png
from stages.evidence.verdict import decide
from stages.export import MANIFEST_FILE
from stages.storage import atomic_dir, read_json, write_bytes, write_json, write_text
from stages.techniques.catalog import TECHNIQUES


def collect(p: config.Params, name: str, baseline_graph: dict[str, Any]) -> dict[str, Any]:
    """One candidate's evidence from the files of its optimize, benchmark and validate stages."""
    man = read_json(Path(p.paths.candidates) / name / "manifest.json", f"optimize@{name}")
    c: dict[str, Any] = {
        "name": name,
        "status": man["status"],
        "reason": man.get("reason", ""),
        "manifest": man,
        # the stage's wall-clock seconds (e.g. distill's training), kept out of the model folder
        "optimize": read_json(Path(p.paths.optimize_log) / f"{name}.json", f"optimize@{name}"),
    }
    if man["status"] != "ok":
        return c
    bench = read_json(Path(p.paths.benchmark) / name / "benchmark.json", f"benchmark@{name}")
    val = read_json(Path(p.paths.validation) / name / "validation.json", f"validate@{name}")
    index = Path(p.paths.failures) / name / "index.csv"
    failures = _csv_rows(index) if index.exists() else []
    timing = TimingEvidence.from_dict(bench)
    sides = {
        side: manifest.side(graph, timing.sessions[side], timing.inputs)
        for side, graph in (("baseline", baseline_graph), ("candidate", man["graph"]))
    }
    changed = manifest.changes(sides["baseline"], sides["candidate"])
    c.update(
        benchmark=bench,
        validation=val,
        failures=failures,
        sides=sides,
        changed=changed,
        confounders=manifest.confounders(changed, TECHNIQUES[name].declares),
    )
    return c


def main() -> None:
    p = config.load()
    host = read_json(Path(p.paths.host_timing), "host")  # the timing key: CPU, cores, threads
    numerics = read_json(Path(p.paths.host_numerics), "host")
    # the comparator: the control (the baseline for an empty stack)
    made_by = "control" if p.control else "baseline"
    base_dir = stack.control_dir(p.paths, p.control)
    base_man = read_json(base_dir / MANIFEST_FILE, made_by)
    cands = [collect(p, name, base_man["graph"]) for name in p.technique]
    for c in cands:
        verdict, rules = decide(c, p.budget)
        c["verdict"], c["rules"] = verdict, as_dicts(rules)
        technique_report = TECHNIQUES[c["name"]].report
        if c["status"] == "ok" and technique_report is not None:
            c["check_lines"] = technique_report(c)
    ok = [c for c in cands if c["status"] == "ok"]
    ctx = {
        "model": p.model_name,
        "target": p.target.name,
        "host": host["fingerprint"],
        "cpu": host["cpu_model"],
        "baseline_graph": base_man["graph"],
        "baseline_file": f"{base_dir.as_posix()}/model.onnx",
        "baseline_accuracy": _baseline_accuracy(ok[0]) if ok else float("nan"),
        "validation_dir": p.paths.validation,
        "candidates_dir": p.paths.candidates,
        "peak": read_json(Path(p.paths.peak), "peak"),
        "confidence_label": f"{p.bench.confidence * 100:g} %",
    }
    if p.control:  # the stack the control was built of
        ctx["control"] = list(p.control)
    summary = {
        "model": p.model_name,
        "target": p.target.name,
        "host": host["fingerprint"],
        "numerics": numerics["fingerprint"],
        "bench": config.as_dict(p.bench),
        "budget": config.as_dict(p.budget),
        "candidates": {c["name"]: _summary_of(c) for c in cands},
    }
    if p.control:  # the stack these candidates were judged against (absent: the baseline)
        summary["control"] = list(p.control)
    with atomic_dir(Path(p.paths.review)) as folder:
        for c in cands:
            write_text(folder / f"{c['name']}.md", review(c, ctx))
    write_bytes(Path(p.paths.tradeoff), tradeoff_png(cands, p.budget, ctx["confidence_label"]))
    write_json(Path(p.paths.summary), summary)
    logged = None
    try:
        logged = tracking.log_run(
            summary, tracking.artifacts_of(p.paths, list(p.technique)), [Path(p.paths.tradeoff)]
        )
        result = logged.record
        line = tracking.logged_line(result)
    except Exception as e:  # any tracking failure: the evidence stands, the note says how to retry
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        uri = tracking.public_uri(tracking.tracking_uri())
        result = {"status": "failed", "uri": uri, "error": reason[:500]}
        line = (
            f"**logging failed** for `{result['uri']}`: {result['error']}. The evidence files are "
            "complete; once the server is reachable, rerun `python -m stages.tracking` "
            "(or `dvc repro -f -s report`)."
        )
        print(f"warning: MLflow logging failed: {reason}", file=sys.stderr)
    write_json(Path(p.paths.tracking), result)
    write_text(Path(p.paths.dashboard), dashboard(cands, ctx, line))
    if logged is not None:  # the dashboard becomes the parent run's description
        tracking.attach_dashboard(logged, Path(p.paths.dashboard))
    for c in cands:
        print(f"{c['name']}: {c['verdict']}")


def _summary_of(c: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "verdict": c["verdict"],
        "status": c["status"],
        "options": c["manifest"]["options"],
    }
    if c["status"] == "ok":
        timing, val = candidate_evidence(c)
        b1, v, worst = timing.batches[0], val.overall, val.worst_slice
        out["metrics"] = {
            "speedup_p50_b1": b1["speedup"]["p50"]["estimate"],
            "speedup_p50_b1_low": b1["speedup"]["p50"]["low"],
            "speedup_p50_b1_high": b1["speedup"]["p50"]["high"],
            "speedup_p95_b1": b1["speedup"]["p95"]["estimate"],
            "speedup_p99_b1": b1["speedup"]["p99"]["estimate"],
            "noise_floor_b1": b1["noise_floor"],
            "throughput_ratio_largest_batch": largest_batch(c["benchmark"])["throughput_ratio"],
            "size_ratio": timing.size_bytes["candidate"] / timing.size_bytes["baseline"],
            "baseline_accuracy": v["baseline_accuracy"]["estimate"],
            "candidate_accuracy": v["candidate_accuracy"]["estimate"],
            "accuracy_drop_points": v["drop_points"],
            "worst_slice_drop_points": val.slices[cast(str, worst)]["drop_points"],
            "right_to_wrong": v["right_to_wrong"],
            "confounded": int(bool(c["confounders"])),
        }
        out["worst_slice"] = worst
        total = c["validation"].get("cumulative")
        if total:  # a stack: the candidate against the original baseline too
            sp, t_worst = b1["cumulative"]["speedup"]["p50"], total["worst_slice"]
            out["metrics"] |= {
                "cumulative_speedup_p50_b1": sp["estimate"],
                "cumulative_speedup_p50_b1_low": sp["low"],
                "cumulative_speedup_p50_b1_high": sp["high"],
                "original_accuracy": total["overall"]["baseline_accuracy"]["estimate"],
                "cumulative_accuracy_drop_points": total["overall"]["drop_points"],
                "cumulative_worst_slice_drop_points": total["slices"][t_worst]["drop_points"]
                if t_worst
                else 0.0,
            }
            out["cumulative_worst_slice"] = t_worst
    else:
        out["reason"] = c["reason"]
        out["metrics"] = {}
    return out


def _baseline_accuracy(c: dict[str, Any]) -> float:
    """The baseline's accuracy on the validation rows, as a candidate's evidence gives it."""
    overall = ValidationEvidence.from_dict(c["validation"]).overall
    estimate: float = overall["baseline_accuracy"]["estimate"]
    return estimate


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    run(main)

"""Stage `validate@<technique>`: accuracy of both sides, paired, per slice, and the failures.

Every row is predicted alone, at its natural shape, as the single-stream service the benchmark
times would answer it; the baseline's predictions come from the `reference` stage (computed once
for all candidates). The candidate is also run in batches, to show whether its predictions depend
on the rows that share a call.

On a stack the comparator is the control (the step's own effect, which the rung's rules weigh),
and the candidate is also compared with the original baseline, overall and per slice
(`cumulative`: what the stack as a whole did to accuracy)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from stages import data as datasets
from stages import fidelity, stack, stats
from stages import params as config
from stages.cli import run
from stages.evidence.records import ValidationEvidence
from stages.export import MODEL_FILE
from stages.failure_rows import failures, predictions_csv, write_failures
from stages.models.catalog import MODELS
from stages.predictions import ORIGINAL_DIR, eval_sets, read_reference, read_reference_outputs
from stages.runtime import (
    ROWS_PER_CALL,
    row_workers,
    run_alone,
    run_rows,
    session,
    spread_rows,
)
from stages.storage import (
    EvidenceError,
    atomic_dir,
    read_json,
    sha256_file,
    write_json,
    write_text,
)

# Rows the batch-invariance check runs batched, spread over the lengths. A sample shows whether
# predictions depend on the batch and by how much (it can miss a rare flip among the rows left
# out); on MiniLM a batched pass over all 3,188 rows cost as much as the rows alone.
BATCH_CHECK_ROWS = 512


def batch_invariance(
    sess: Any,
    feeds: dict[str, np.ndarray],
    alone: np.ndarray,
    labels: np.ndarray,
    preset: Any,
    label: int = 0,
    rows: int = BATCH_CHECK_ROWS,
) -> dict[str, Any]:
    """`rows` of the rows (all when there are fewer), spread evenly over the lengths, run
    ROWS_PER_CALL at a time (length-sorted, as a batched service would group them) against each
    row alone: how many change class, and by how much."""
    pick = np.sort(spread_rows(feeds, preset, min(rows, len(labels))))
    sample = {k: v[pick] for k, v in feeds.items()}
    batched = run_rows(sess, sample, preset)[label].astype(np.float32)
    alone, labels_of_set, labels = alone[pick], len(labels), labels[pick]
    return {
        "rows_per_call": ROWS_PER_CALL,
        "rows": len(labels),
        "of_rows": labels_of_set,
        "argmax_changed": int((batched.argmax(1) != alone.argmax(1)).sum()),
        "max_abs_difference": stats.max_abs_error(alone, batched),
        "accuracy_alone": float((alone.argmax(1) == labels).mean()),
        "accuracy_batched": float((batched.argmax(1) == labels).mean()),
    }


def compare(
    base_ok: np.ndarray,
    cand_ok: np.ndarray,
    confidence: float,
    base_pred: np.ndarray | None = None,
    cand_pred: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy of both sides with intervals, the paired difference with McNemar's test and,
    given each side's predicted classes, their agreement (the share of rows where both predict
    the same class, right or wrong) with its interval."""
    n = int(base_ok.size)
    r2w = int((base_ok & ~cand_ok).sum())
    w2r = int((~base_ok & cand_ok).sum())
    diff = stats.paired_accuracy_difference(r2w, w2r, n, confidence)
    out = {
        "n": n,
        "baseline_accuracy": stats.wilson_interval(int(base_ok.sum()), n, confidence).to_dict(),
        "candidate_accuracy": stats.wilson_interval(int(cand_ok.sum()), n, confidence).to_dict(),
        "difference_points": {k: 100 * v for k, v in diff.to_dict().items()},
        "drop_points": 100 * -diff.estimate + 0.0,  # + 0.0: no "-0.0" in the evidence
        "right_to_wrong": r2w,
        "wrong_to_right": w2r,
        "mcnemar_p": stats.mcnemar_exact(r2w, w2r),
    }
    if base_pred is not None and cand_pred is not None:
        same = int((base_pred == cand_pred).sum())
        out["agreement"] = stats.wilson_interval(same, n, confidence).to_dict()
    return out


def evaluate(
    reference: dict[str, np.ndarray],
    cand_sess: Any,
    prepared: datasets.Prepared,
    confidence: float,
    preset: Any = None,
    same_model: bool = False,
    workers: list[Any] | None = None,
    reference_outputs: dict[str, np.ndarray] | None = None,
) -> ValidationEvidence:
    """The candidate's predictions on every set the slices use, paired with the baseline's
    (`reference`: the label output's logits per set), the overall and per-slice comparisons,
    every output's fidelity on the validation rows (`reference_outputs`: the baseline's outputs
    by name; without them only the label output is compared), and the batch-invariance check.
    `same_model`: the candidate's ONNX is byte-identical to the baseline's (a serving-only
    change, e.g. batching), so its rows alone are the reference's on the same session settings
    and are not run again; the batch-invariance check still runs the candidate."""
    for name in eval_sets(prepared):
        if reference.get(name) is None or len(reference[name]) != len(prepared.labels(name)):
            raise EvidenceError(
                f"the baseline's reference predictions lack set {name!r} or differ from it in "
                "rows: run `dvc repro reference`"
            )
    names, label = fidelity.label_of(cand_sess, prepared)
    base_out = reference_outputs or {names[label]: reference["validation"]}
    how: dict[str, dict[str, Any]] = {name: {} for name in eval_sets(prepared)}
    if same_model:
        logits = {n: (reference[n], reference[n].copy()) for n in eval_sets(prepared)}
        cand_out = dict(base_out)
    else:
        runs = {
            n: run_alone(cand_sess, prepared.feeds(n), preset, f"candidate {n}", workers, how[n])
            for n in eval_sets(prepared)
        }
        logits = {n: (reference[n], out[label].astype(np.float32)) for n, out in runs.items()}
        cand_out = dict(zip(names, runs["validation"], strict=True))
    pred = {name: (b.argmax(1), c.argmax(1)) for name, (b, c) in logits.items()}
    ok = {
        name: (b == prepared.labels(name), c == prepared.labels(name))
        for name, (b, c) in pred.items()
    }
    slices, worst = per_slice(prepared, ok, confidence, pred)
    ref, test = logits["validation"]
    feeds, labels = prepared.feeds("validation"), prepared.labels("validation")
    return ValidationEvidence(
        overall=compare(*ok["validation"], confidence, *pred["validation"]),
        slices=slices,
        worst_slice=worst,
        fidelity=fidelity.fidelity(ref, test),
        label_output=names[label],
        outputs=fidelity.per_output(base_out, cand_out, names[label]),
        candidate_rows_alone="the reference's (byte-identical model)" if same_model else how,
        batch_invariance=batch_invariance(cand_sess, feeds, test, labels, preset, label),
        logits=logits,
    )


def per_slice(
    prepared: datasets.Prepared,
    ok: dict[str, tuple[np.ndarray, np.ndarray]],
    confidence: float,
    pred: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Each slice's paired comparison (from each side's right/wrong per row, and its predicted
    class per row for the agreement), and the worst."""
    slices = {}
    for s in prepared.slices:
        rows = prepared.slice_rows(s)
        b_ok, c_ok = ok[s.set]
        classes = () if pred is None else (pred[s.set][0][rows], pred[s.set][1][rows])
        slices[s.name] = {
            "set": s.set,
            "description": s.description,
            **compare(b_ok[rows], c_ok[rows], confidence, *classes),
        }
    worst = (
        max(slices, key=lambda k: (slices[k]["drop_points"], slices[k]["right_to_wrong"], k))
        if slices
        else None
    )
    return slices, worst


def cumulative(
    original: dict[str, np.ndarray],
    logits: dict[str, tuple[np.ndarray, np.ndarray]],
    prepared: datasets.Prepared,
    confidence: float,
) -> dict[str, Any]:
    """The candidate against the original baseline (`original`: its logits per set), overall
    and per slice, paired row by row as against the control."""
    pred = {n: (original[n].argmax(1), c.argmax(1)) for n, (_, c) in logits.items()}
    ok = {n: (b == prepared.labels(n), c == prepared.labels(n)) for n, (b, c) in pred.items()}
    slices, worst = per_slice(prepared, ok, confidence, pred)
    return {
        "against": "original baseline",
        "overall": compare(*ok["validation"], confidence, *pred["validation"]),
        "slices": slices,
        "worst_slice": worst,
    }


def flat_metrics(result: dict[str, Any]) -> dict[str, Any]:
    o, worst = result["overall"], result["worst_slice"]
    out = {
        "baseline_accuracy": o["baseline_accuracy"]["estimate"],
        "candidate_accuracy": o["candidate_accuracy"]["estimate"],
        "accuracy_drop_points": o["drop_points"],
        "right_to_wrong": o["right_to_wrong"],
        "wrong_to_right": o["wrong_to_right"],
        "mcnemar_p": o["mcnemar_p"],
        **{f"fidelity_{k}": v for k, v in result["fidelity"].items()},
    }
    out["batch_argmax_changed"] = result["batch_invariance"]["argmax_changed"]
    if "agreement" in o:  # the share of rows where both sides predict the same class
        out["agreement"] = o["agreement"]["estimate"]
    if worst:
        out["worst_slice_drop_points"] = result["slices"][worst]["drop_points"]
    if "cumulative" in result:  # a stack: against the original baseline
        c = result["cumulative"]
        out["cumulative_accuracy_drop_points"] = c["overall"]["drop_points"]
        if c["worst_slice"]:
            out["cumulative_worst_slice_drop_points"] = c["slices"][c["worst_slice"]]["drop_points"]
    moved = fidelity.worst_other(result.get("outputs", {}))
    if moved:  # models with outputs beside the label one
        out["worst_other_output_relative_error"] = moved[1]["relative_error"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("technique")
    name = parser.parse_args(argv).technique
    p = config.load()
    cand_dir = Path(p.paths.candidates) / name
    manifest = read_json(cand_dir / "manifest.json", f"optimize@{name}")
    out = Path(p.paths.validation) / name
    result: dict[str, Any] = {"technique": name, "status": manifest["status"]}
    prepared = datasets.read(Path(p.paths.data))
    rows: list[dict[str, Any]] = []
    logits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if manifest["status"] == "ok":
        base = stack.control_dir(p.paths, p.control) / MODEL_FILE  # the baseline when empty
        reference = read_reference(Path(p.paths.reference), base)
        outputs = read_reference_outputs(Path(p.paths.reference))
        cand = session(cand_dir / MODEL_FILE, p.target, f"optimize@{name}")
        same = sha256_file(cand_dir / MODEL_FILE) == sha256_file(base)
        workers = [] if same else row_workers(cand_dir / MODEL_FILE, p.target)
        confidence = p.bench.confidence
        evidence = evaluate(
            reference, cand, prepared, confidence, MODELS[p.model_name], same, workers, outputs
        )
        result.update(evidence.to_dict())
        logits = evidence.logits
        if p.control:  # a stack: the candidate against the original baseline too
            first = Path(p.paths.baseline) / MODEL_FILE
            original = read_reference(Path(p.paths.reference) / ORIGINAL_DIR, first)
            result["cumulative"] = cumulative(original, logits, prepared, confidence)
        rows = failures(prepared, logits)
        result["failures"] = {
            "right_to_wrong": sum(r["kind"] == "right_to_wrong" for r in rows),
            "still_wrong_kept": sum(r["kind"] == "still_wrong" for r in rows),
            "folder": str(Path(p.paths.failures) / name),
        }
    else:
        result["reason"] = manifest.get("reason", "")
    with atomic_dir(Path(p.paths.failures) / name) as folder:
        write_failures(folder, rows, prepared, MODELS[p.model_name].render_failure)
    write_text(out / "predictions.csv", predictions_csv(prepared, logits))
    slices_rows = ["slice,baseline_accuracy,candidate_accuracy"] + [
        f"{k},{v['baseline_accuracy']['estimate']:.6f},{v['candidate_accuracy']['estimate']:.6f}"
        for k, v in result.get("slices", {}).items()
    ]
    write_text(out / "slices.csv", "\n".join(slices_rows) + "\n")
    write_json(out / "metrics.json", flat_metrics(result) if logits else {})
    write_json(out / "validation.json", result)
    if logits:
        o = result["overall"]
        print(
            f"{name}: accuracy {o['baseline_accuracy']['estimate']:.4f} -> "
            f"{o['candidate_accuracy']['estimate']:.4f}, flips {o['right_to_wrong']} right->wrong, "
            f"{o['wrong_to_right']} wrong->right, worst slice {result['worst_slice']}"
        )


if __name__ == "__main__":
    run(main)

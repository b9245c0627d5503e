"""distill's lines in the review note: the student, its training and training curve, its
agreement with the teacher, and where it fails that the teacher did not."""

from __future__ import annotations

from typing import Any

from stages.evidence.lines import percent, points, slice_lines, speed_lines


def report(c: dict[str, Any]) -> list[str]:
    """Student size, training and its curve, then its agreement with the teacher and where the
    compact model fails that the teacher did not."""
    d = c.get("manifest", {}).get("details") or {}
    lines = []
    if d:
        p = d["parameters"]
        arch = ", ".join(f"{k}: {v}" for k, v in d["student"].items())
        kept = f", the teacher's layers {d['keep_layers']}" if d.get("keep_layers") else ""
        lines.append(
            f"- Student ({arch}{kept}): {p['student']:,} parameters against the teacher's "
            f"{p['teacher']:,} ({percent(p['ratio'])} of it)."
        )
        tr = d.get("training")
        if tr:
            lines.append(training_line(d, tr, c.get("optimize", {}).get("seconds", {})))
        lines += curve(d["epochs"])
    lines += speed_lines(c.get("benchmark", {}).get("batches", []))
    o = c.get("validation", {}).get("overall")
    if o:
        acc = ""
        if "baseline_accuracy" in o and "candidate_accuracy" in o:
            acc = (
                f"{percent(o['baseline_accuracy']['estimate'])} -> "
                f"{percent(o['candidate_accuracy']['estimate'])}, "
            )
        lines.append(
            f"- Against the teacher: {acc}{points(o['drop_points'])} overall; "
            f"{o['right_to_wrong']} new failures (right->wrong), "
            f"{o['wrong_to_right']} fixed (wrong->right)."
        )
    if o and "agreement" in o:
        a = o["agreement"]
        lines.append(
            f"- Agreement with the teacher (rows where both predict the same class): "
            f"{percent(a['estimate'])} [{percent(a['low'])}, {percent(a['high'])}] of "
            f"{o['n']:,} validation rows; per slice in the slice table."
        )
    lines += slice_lines(c)
    new = [f for f in c.get("failures") or [] if f.get("kind") == "right_to_wrong"]
    if new:
        by_set: dict[str, list[dict[str, Any]]] = {}
        for f in new:
            by_set.setdefault(str(f["set"]), []).append(f)
        for name, rows in sorted(by_set.items()):
            cases = ", ".join(
                f"#{r['index']} {r['label']}->{r['candidate_pred']} (`{r['file']}`)"
                for r in rows[:10]
            )
            more = f", and {len(rows) - 10} more" if len(rows) > 10 else ""
            lines.append(f"- New failures in {name}: {len(rows)} (true->predicted): {cases}{more}.")
    elif "failures" in c:
        lines.append("- No example the teacher got right is wrong for the student.")
    return lines


def training_line(d: dict[str, Any], tr: dict[str, Any], seconds: dict[str, Any]) -> str:
    """How the student was trained, and how long it took (from the stage's timing report)."""
    loss = d.get("loss", "logits")
    if loss == "embedding":
        what = "the mean-squared error to the teacher's pooled embedding, under its frozen head"
    else:
        soft = f"the teacher's soft labels (T = {d['temperature']:g}, alpha = {d['alpha']:g})"
        what = f"{soft} alone" if d["alpha"] == 1 else f"{soft} and the true labels"
    schedule = tr.get("schedule", "constant")
    if schedule == "linear":
        schedule = f"linear, warm-up {tr.get('warmup', 0):.0%} of the steps, decay to 0"
    took = ""
    if "training" in seconds:
        took = f", {seconds['training']:.0f} s on {tr.get('threads', 1)} thread(s)"
    return (
        f"- Trained from {tr['init']} on {tr['rows']:,} train rows against {what}: "
        f"{tr['epochs']} epoch(s), batch {tr['batch_size']} ({tr['batches']}), learning rate "
        f"{tr['learning_rate']:g} ({schedule}){took}."
    )


def curve(epochs: list[dict[str, Any]]) -> list[str]:
    """The training curve: loss and train accuracy per epoch, and the agreement with the
    teacher on the tuning rows (held out of training; never validation rows) where measured."""
    tuned = all("tuning_agreement" in e for e in epochs)
    out = [
        "",
        "| epoch | loss | train accuracy |"
        + (" tuning agreement | tuning accuracy |" if tuned else ""),
    ]
    out.append("|---:|---:|---:|" + ("---:|---:|" if tuned else ""))
    for e in epochs:
        row = f"| {e['epoch']} | {e['loss']:.4f} | {percent(e['train_accuracy'])} |"
        if tuned:
            row += f" {percent(e['tuning_agreement'])} | {percent(e['tuning_accuracy'])} |"
        out.append(row)
    return [*out, ""]

"""A distilled student whose decision threshold moved: overall accuracy unchanged because one
class gains what the other loses. The slice rule must reject it, and its agreement with the
teacher must come from the predicted classes (synthetic predictions, real validate and verdict
code)."""

from __future__ import annotations

import numpy as np
from factories import candidate

from stages.data import MASK_PREFIX, Prepared, Slice
from stages.evidence.verdict import REJECT, SHIP, decide
from stages.params import Budget
from stages.techniques import distill
from stages.validate import compare, per_slice

ROTTEN, FRESH = 0, 1


def _validation(student_shift: float) -> dict[str, object]:
    """2,000 rows, 40 % rotten; the teacher right on 80 % of each class; the student the
    teacher's scores shifted towards `fresh` by `student_shift` (0 = the teacher's decisions)."""
    rng = np.random.default_rng(7)
    labels = (rng.random(2000) < 0.6).astype(np.int64)
    score = np.where(labels == FRESH, 0.5, -0.5) + rng.normal(0, 0.6, 2000)  # > 0: fresh
    teacher = (score > 0).astype(np.int64)
    student = (score + student_shift > 0).astype(np.int64)
    masks = {f"class_{n}": labels == c for c, n in ((ROTTEN, "rotten"), (FRESH, "fresh"))}
    sets = {"validation": {"labels": labels, **{MASK_PREFIX + k: v for k, v in masks.items()}}}
    slices_of = [Slice(k, "validation", k, k) for k in masks]
    prepared = Prepared(["x"], ["rotten", "fresh"], sets, slices_of)
    ok = {"validation": (teacher == labels, student == labels)}
    pred = {"validation": (teacher, student)}
    slices, worst = per_slice(prepared, ok, 0.95, pred)
    return {
        "overall": compare(*ok["validation"], 0.95, teacher, student),
        "slices": slices,
        "worst_slice": worst,
        "fidelity": {"max_abs_error": 0.01, "cosine": 0.999, "sqnr_db": 40.0},
    }


def test_a_student_whose_class_balance_drifts_is_rejected_by_the_slice_rule() -> None:
    c = candidate(name="distill")
    c["validation"] = _validation(student_shift=0.45)

    verdict, rules = decide(c, Budget())

    by_name = {r.name: r for r in rules}
    assert verdict == REJECT
    assert by_name["worst-slice drop"].status == "fail"
    assert "class_rotten" in by_name["worst-slice drop"].reason
    assert by_name["accuracy drop"].status != "fail"  # overall it looks fine: the trap
    o = c["validation"]["overall"]
    flips = o["right_to_wrong"] + o["wrong_to_right"]
    assert o["agreement"]["estimate"] == 1 - flips / o["n"]  # two classes: a flip is a change
    assert o["agreement"]["estimate"] < 0.9
    assert c["validation"]["slices"]["class_rotten"]["agreement"]["estimate"] < 0.8


def test_a_student_that_keeps_the_teachers_decisions_ships() -> None:
    c = candidate(name="distill")
    c["validation"] = _validation(student_shift=0.0)

    verdict, _ = decide(c, Budget())

    assert verdict == SHIP
    assert c["validation"]["overall"]["agreement"]["estimate"] == 1.0


def test_the_review_note_shows_agreement_overall() -> None:
    c = candidate(name="distill")
    c["validation"] = _validation(student_shift=0.45)
    c["manifest"] = {"details": {}}
    c["benchmark"] = {"batches": []}  # the speed lines are another test's
    a = c["validation"]["overall"]["agreement"]

    text = "\n".join(distill.report(c))

    assert "Agreement with the teacher (rows where both predict the same class): " in text
    assert f"{a['estimate'] * 100:.1f} %" in text

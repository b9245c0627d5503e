"""The real `dvc repro` on the digits model, in a temporary copy of the repository.

The config is the real one, shrunk (fewer epochs, short timing), through the same composer that
`make params` and `dvc exp run -S` use. Tests run in file order on one pipeline run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TECHNIQUES = ["int8_dynamic", "int8_static"]
BENCH = [  # short timing; `dvc exp run -S` recomposes from conf/, so every run passes these
    "bench.warmup_calls=5",
    "bench.min_rounds=4",
    "bench.sessions=2",  # two worker processes: the replicated path, at a test's cost
    "bench.max_rounds=30",
    "bench.max_seconds=1.5",
    "bench.memory_calls=5",
    "bench.load_repeats=2",
    "bench.bootstrap_resamples=300",
]
DIGITS = ["model=digits_cnn", "model.epochs=8"]  # the fast preset, whatever the default is
SHRINK = [*DIGITS, "technique=[int8_dynamic,int8_static]", *BENCH]


def overrides(*extra: str) -> list[str]:
    """`-S` arguments for dvc exp run: the short timing plus `extra`."""
    return [arg for o in (*BENCH, *extra) for arg in ("-S", o)]


VERDICTS = {"SHIP", "HOLD", "REJECT"}
UI_VIEW = "workflowType=machine_learning"  # the UI's model-training view, as `make ui` prints

pytestmark = pytest.mark.slow


def run(
    repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    base = os.environ.copy()
    base.pop("MLFLOW_TRACKING_URI", None)
    base["PATH"] = (
        f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}"  # `python` in dvc.yaml
    )
    base["MLFLOW_DISABLE_TELEMETRY"] = "true"
    done = subprocess.run(
        list(args),
        cwd=repo,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{args} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def dvc(repo: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(repo, sys.executable, "-m", "dvc", *args, **kw)


def digest(repo: Path, patterns: list[str]) -> dict[str, str]:
    files = sorted(f for pat in patterns for f in repo.glob(pat) if f.is_file())
    return {str(f.relative_to(repo)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def ran_stages(out: str) -> list[str]:
    """The stages a `dvc repro` ran, in order, from its output."""
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def load(repo: Path, rel: str) -> Any:
    return json.loads((repo / rel).read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the working tree as a fresh clone would have it, shrunk, after one dvc repro."""
    dest = tmp_path_factory.mktemp("workbench")
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    run(dest, "git", "init", "-q")
    run(dest, sys.executable, "-m", "stages.compose", *SHRINK)
    run(dest, "git", "add", "-A")
    run(dest, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
    dvc(dest, "repro")
    return dest


def test_evidence_files_and_verdicts(repo: Path) -> None:
    summary = load(repo, "reports/summary.json")
    assert sorted(summary["candidates"]) == TECHNIQUES
    for t in TECHNIQUES:
        bench = load(repo, f"reports/benchmark/{t}/benchmark.json")
        assert bench["status"] == "ok" and [b["batch_size"] for b in bench["batches"]] == [1, 8]
        for b in bench["batches"]:
            sp = b["speedup"]["p50"]
            assert 0 < sp["low"] <= sp["estimate"] <= sp["high"]
            assert b["stopped_by"] in {"precision", "max_seconds", "max_rounds"} or b[
                "stopped_by"
            ].startswith("decided (")
            assert b["rounds"] >= 4  # bench.min_rounds (BENCH) holds, whatever max_seconds says
            for side in ("baseline", "candidate", "baseline_again"):
                assert b["sides"][side]["calls"] == b["rounds"] * b["calls_per_block"]
        assert bench["sessions"]["baseline"] == bench["sessions"]["candidate"]
        lines = (repo / f"reports/benchmark/{t}/latencies.csv").read_text().splitlines()
        assert len(lines) - 1 == sum(3 * b["calls_per_side"] for b in bench["batches"])
        assert bench["memory"]["candidate"]["peak_over_start_bytes"] > 0
        val = load(repo, f"reports/validation/{t}/validation.json")
        assert val["overall"]["n"] == 450 and "low_light" in val["slices"]
        index = (repo / f"reports/failures/{t}/index.csv").read_text().splitlines()
        assert (
            len(index) - 1
            == val["failures"]["right_to_wrong"] + val["failures"]["still_wrong_kept"]
        )
        for row in index[1:]:
            assert (repo / f"reports/failures/{t}" / row.split(",")[1]).is_file()
        note = (repo / f"reports/review/{t}.md").read_text()
        for heading in (
            "## What changed",
            "## Which metric improved",
            "## Which got worse or stayed risky",
            "## Which validation examples were checked",
            "## Evidence card",
            "## Check before shipping",
        ):
            assert heading in note
        verdict = summary["candidates"][t]["verdict"]
        assert verdict in VERDICTS and f"**Verdict: {verdict}**" in note
        assert summary["candidates"][t]["metrics"]["confounded"] == 0
    dashboard = (repo / "reports/dashboard.md").read_text()
    assert all(f"[{t}](review/{t}.md)" in dashboard for t in TECHNIQUES)
    assert (repo / "reports/tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = dvc(repo, "metrics", "show", "--json").stdout
    assert "b1_speedup_p50" in shown and "candidate_accuracy" in shown


def test_aa_comparison_sets_the_noise_floor(repo: Path) -> None:
    for t in TECHNIQUES:
        for b in load(repo, f"reports/benchmark/{t}/benchmark.json")["batches"]:
            aa = b["aa_p50"]
            # no timing bound here (this machine is shared): the A/A figures of a real run are in
            # the evidence; what must hold is that the noise floor covers the A/A spread
            assert 0 < aa["low"] <= aa["estimate"] <= aa["high"]
            spread = max(abs(aa[k] - 1) for k in ("estimate", "low", "high"))
            assert b["noise_floor"] == pytest.approx(max(0.03, spread))


def test_mlflow_has_a_parent_run_and_one_child_per_candidate(repo: Path) -> None:
    tracking = load(repo, "reports/tracking.json")
    assert tracking["status"] == "logged" and tracking["uri"] == "sqlite:///mlflow.db"
    with sqlite3.connect(repo / "mlflow.db") as db:
        tags = db.execute("select run_uuid, key, value from tags").fetchall()
    by_run: dict[str, dict[str, str]] = {}
    for run_id, key, value in tags:
        by_run.setdefault(run_id, {})[key] = value
    children = {t["technique"]: t for t in by_run.values() if "technique" in t}
    assert sorted(children) == TECHNIQUES
    summary = load(repo, "reports/summary.json")
    [parent_id] = [r for r, t in by_run.items() if t.get("evidence") == tracking["evidence"]]
    assert tracking["parent_run"] == f"tags.evidence = '{tracking['evidence']}'"
    for t, tags_of in children.items():
        assert tags_of["mlflow.parentRunId"] == parent_id
        assert tags_of["verdict"] == summary["candidates"][t]["verdict"]
        assert len(tags_of["git_commit"]) == 40 and tags_of["host_fingerprint"] == summary["host"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RENDER_MS = 30_000  # virtual ms the UI may take to render; it does not advance during fetches


@pytest.fixture()
def mlflow_ui(repo: Path, tmp_path: Path) -> Iterator[str]:
    """The MLflow UI on the copy's store, as `make ui` serves it, on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, log = f"http://127.0.0.1:{port}", tmp_path / "mlflow-ui.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,  # anything the server writes stays out of the repository copy
            env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown ends its workers too
        )
    try:
        deadline = time.monotonic() + 120  # s; the first start imports MLflow's server
        while not _answers(f"{url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the MLflow UI did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _end_group(proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group led by `proc`, SIGKILL it if it is still there after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def mlflow_api(ui: str, path: str, body: dict[str, Any] | None = None, **query: str) -> Any:
    """GET (or POST `body` to) MLflow's REST API at `path`, e.g. `runs/search`."""
    url = f"{ui}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class Page(HTMLParser):
    """A rendered DOM as a reader sees it: the title, the visible text, the links' targets."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.links = set[str]()
        self._words: list[str] = []
        self._titles: list[str] = []  # the document's, then those of inline SVG icons
        self._open: list[str] = []  # the script, style or title element the parser is in
        self.feed(dom)
        self.close()
        self.title = self._titles[0] if self._titles else ""
        self.text = " ".join(self._words)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "title"):
            self._open.append(tag)
            self._titles += [""] if tag == "title" else []
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.add(href)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if not self._open:
            self._words += data.split()
        elif self._open[-1] == "title":
            self._titles[-1] += data


def rendered(url: str, profile_root: Path) -> Page:
    """`url` after headless Chromium ran its scripts, in a fresh profile (no stored UI state)."""
    profile = tempfile.mkdtemp(dir=profile_root)
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", "--dump-dom", f"--virtual-time-budget={RENDER_MS}", url,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0 and done.stdout, f"{url}: {done.stderr[-2000:]}"
    return Page(done.stdout)


def note_line(note: str) -> str:
    """A review note's most distinctive line as the UI renders it: the summary sentence, or,
    for a note without one (NOT APPLICABLE), the verdict with its reason."""
    lines = note.splitlines()
    quoted = [line[2:] for line in lines if line.startswith("> ")]
    line = quoted[0] if quoted else next(x for x in lines if x.startswith("**Verdict:"))
    return " ".join(line.replace("**", "").split())


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary (`chromium` or `chromium-browser`): install the `chromium` "
    "package to run the MLflow UI browser test",
)
def test_mlflow_ui_opens_on_the_runs_and_shows_verdict_and_note(
    repo: Path, mlflow_ui: str, tmp_path: Path
) -> None:
    tracking = load(repo, "reports/tracking.json")
    verdict = load(repo, "reports/summary.json")["candidates"]["int8_dynamic"]["verdict"]
    exp = mlflow_api(mlflow_ui, "experiments/get-by-name", experiment_name=tracking["experiment"])
    exp_id = exp["experiment"]["experiment_id"]
    found = mlflow_api(mlflow_ui, "runs/search", {"experiment_ids": [exp_id], "max_results": 1000})
    assert "next_page_token" not in found
    runs = {r["info"]["run_id"]: r for r in found["runs"]}
    tags = {i: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for i, r in runs.items()}
    [parent] = [i for i, t in tags.items() if t.get("evidence") == tracking["evidence"]]
    children = {t["technique"]: i for i, t in tags.items() if t.get("mlflow.parentRunId") == parent}
    assert sorted(children) == TECHNIQUES
    name = {i: r["info"]["run_name"] for i, r in runs.items()}
    link = f"#/experiments/{exp_id}"

    # what a reviewer clicks on the home page, and the page it opens: the runs, not GenAI traces
    assert link in rendered(f"{mlflow_ui}/", tmp_path).links
    # MLflow 3's UI picks GenAI or model training from the URL (or the browser's last choice)
    # and ignores the experiment's kind tag: `make ui` prints the link with the parameter
    landing = rendered(f"{mlflow_ui}/{link}?{UI_VIEW}", tmp_path)
    seen = f"title {landing.title!r}, text: {landing.text[:600]}"
    assert landing.title.startswith("Runs - "), seen
    assert "No data available" not in landing.text and "Run Name" in landing.text, seen
    assert f"{link}/runs/{parent}" in landing.links and name[parent] in landing.text, seen
    assert f"{len(runs)} matching runs" in landing.text, seen  # children counted, nested

    # sorted by name the table lists every run flat: each child by the name that reads alone
    query = urllib.parse.urlencode(
        {"orderByKey": "tags.`mlflow.runName`", "orderByAsc": "true"}, quote_via=urllib.parse.quote
    )
    table = rendered(f"{mlflow_ui}/{link}/runs?{query}", tmp_path)
    for t, i in children.items():
        assert f"{link}/runs/{i}" in table.links and name[i] in table.text, (t, table.text[:600])

    # the int8_dynamic child's page: its verdict (from the evidence) and its review note
    child = children["int8_dynamic"]
    assert verdict in name[child]
    page = rendered(f"{mlflow_ui}/{link}/runs/{child}", tmp_path)
    note = (repo / "reports/review/int8_dynamic.md").read_text()
    assert page.title.startswith("Run "), page.title
    assert name[child] in page.text and f"Verdict: {verdict}" in page.text, page.text[:600]
    assert note_line(note) in page.text, (note_line(note), page.text[:2000])


def test_second_repro_runs_only_the_host_check(repo: Path) -> None:
    assert ran_stages(dvc(repo, "repro").stdout) == ["host"]


def test_forced_repro_gives_identical_evidence(repo: Path) -> None:
    patterns = [
        "data/prepared/*",
        "models/**/*",
        "reports/reference/**/*",
        "reports/validation/**/*",
        "reports/failures/**/*",
    ]
    before = digest(repo, patterns)
    accuracy = {
        t: load(repo, "reports/summary.json")["candidates"][t]["metrics"]["candidate_accuracy"]
        for t in TECHNIQUES
    }
    dvc(repo, "repro", "-f")
    after = digest(repo, patterns)
    assert len(before) > 30 and before == after
    again = load(repo, "reports/summary.json")["candidates"]
    assert {t: again[t]["metrics"]["candidate_accuracy"] for t in TECHNIQUES} == accuracy


def test_unreachable_tracking_server_keeps_the_evidence(repo: Path) -> None:
    done = run(
        repo,
        sys.executable,
        "-m",
        "stages.report",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    assert "MLflow logging failed" in done.stderr
    tracking = load(repo, "reports/tracking.json")
    assert tracking["status"] == "failed" and tracking["uri"] == "http://127.0.0.1:9"
    dashboard = (repo / "reports/dashboard.md").read_text()
    assert "logging failed" in dashboard and "python -m stages.tracking" in dashboard
    assert all((repo / f"reports/review/{t}.md").is_file() for t in TECHNIQUES)
    run(repo, sys.executable, "-m", "stages.report")  # reachable again: logged once more
    assert load(repo, "reports/tracking.json")["status"] == "logged"


def test_bad_params_stop_at_the_first_stage_and_keep_the_evidence(repo: Path) -> None:
    kept = digest(repo, ["reports/**/*"])
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params.replace("  int8_static:\n", "  int8_statik:\n"))
        done = dvc(repo, "repro", check=False)
        assert done.returncode != 0
        assert "int8_statik" in done.stderr and "int8_static" in done.stderr
        assert digest(repo, ["reports/**/*"]) == kept

        run(repo, sys.executable, "-m", "stages.compose", *SHRINK, "target=cuda")
        done = dvc(repo, "repro", check=False)
        assert done.returncode != 0
        assert "CUDAExecutionProvider" in done.stderr and "no silent fallback" in done.stderr
        assert digest(repo, ["reports/**/*"]) == kept
    finally:
        (repo / "params.yaml").write_text(params)


def test_truncated_model_is_a_clear_error(repo: Path) -> None:
    model = repo / "models/candidates/int8_static/model.onnx"
    evidence = (repo / "reports/benchmark/int8_static/benchmark.json").read_bytes()
    original = model.read_bytes()
    try:
        model.write_bytes(original[: len(original) // 2])
        done = run(repo, sys.executable, "-m", "stages.benchmark", "int8_static", check=False)
        assert done.returncode == 1
        assert "models/candidates/int8_static/model.onnx" in done.stderr and "dvc" in done.stderr
        assert "Traceback" not in done.stderr
        assert (repo / "reports/benchmark/int8_static/benchmark.json").read_bytes() == evidence
        model.unlink()
        done = run(repo, sys.executable, "-m", "stages.validate", "int8_static", check=False)
        assert done.returncode == 1 and "is missing" in done.stderr
    finally:
        model.write_bytes(original)


def test_exp_run_one_candidate_on_the_edge_target(repo: Path) -> None:
    dvc(
        repo,
        "exp",
        "run",
        "-n",
        "edge-static",
        *overrides(*DIGITS, "technique=[int8_static]", "target=edge"),
    )
    summary = load(repo, "reports/summary.json")
    assert list(summary["candidates"]) == ["int8_static"] and summary["target"] == "edge"
    bench = load(repo, "reports/benchmark/int8_static/benchmark.json")
    assert bench["sessions"]["candidate"]["intra_op_threads"] == 1
    shown = dvc(repo, "exp", "show", "--no-pager", "--csv").stdout
    assert "edge-static" in shown and "b1_speedup_p50" in shown


def test_exp_run_on_a_stack_judges_the_step_and_the_stack(repo: Path) -> None:
    """A rung: the control is the baseline with prune_magnitude applied; int8_dynamic is timed
    against it with the original baseline as a fourth side, and validated against both."""
    dvc(
        repo,
        "exp",
        "run",
        "-n",
        "rung-1",
        *overrides(*DIGITS, "technique=[int8_dynamic,fp16]", "technique@control=[prune_magnitude]"),
    )
    control = load(repo, "models/control/manifest.json")
    assert control["stack"] == ["prune_magnitude"] and control["steps"][0]["step"] == 1
    summary = load(repo, "reports/summary.json")
    assert summary["control"] == ["prune_magnitude"]
    b1 = load(repo, "reports/benchmark/int8_dynamic/benchmark.json")["batches"][0]
    assert set(b1["sides"]) == {"baseline", "candidate", "baseline_again", "original"}
    assert b1["cumulative"]["speedup"]["p50"]["low"] > 0
    val = load(repo, "reports/validation/int8_dynamic/validation.json")
    assert val["cumulative"]["overall"]["n"] == val["overall"]["n"]
    note = (repo / "reports/review/int8_dynamic.md").read_text()
    assert "## On the stack" in note and "(stack, against the original baseline)" in note
    assert "stack: p50 speedup b1" in (repo / "reports/dashboard.md").read_text()
    metrics = summary["candidates"]["int8_dynamic"]["metrics"]
    assert "cumulative_speedup_p50_b1" in metrics
    ref = repo / "reports/reference"
    assert (ref / "original" / "logits.npz").is_file()
    assert summary["candidates"]["fp16"]["verdict"] in VERDICTS | {"NOT APPLICABLE"}
    shown = dvc(repo, "exp", "show", "--no-pager", "--csv").stdout
    assert "rung-1" in shown and "b1_cumulative_speedup_p50" in shown


def write_idx(path: Path, arr: np.ndarray) -> None:
    """Gzipped IDX, as the Fashion-MNIST files are: magic (0, 0, uint8 code, ndim), dims, data."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_exp_run_fashion_cnn_on_small_data(repo: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("t10k", 120)):
        labels = np.arange(n) % 10
        images = (rng.random((n, 28, 28)) * 60 + labels[:, None, None] * 19).astype(np.uint8)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    fashion = [
        "model=fashion_cnn",
        f"model.data_dir={tmp_path}",
        "model.max_train_rows=400",
        "model.calibration_size=40",
        "model.epochs=1",
        "technique=[int8_static]",
        "technique.int8_static.calibration_size=40",
    ]
    dvc(repo, "exp", "run", "-n", "fashion-small", *overrides(*fashion))
    summary = load(repo, "reports/summary.json")
    assert (
        summary["model"] == "fashion_cnn"
        and summary["candidates"]["int8_static"]["verdict"] in VERDICTS
    )
    val = load(repo, "reports/validation/int8_static/validation.json")
    assert val["overall"]["n"] == 120 and "low_light" in val["slices"]


def test_exp_run_bring_your_own_onnx(repo: Path, tmp_path: Path) -> None:
    shutil.copy(repo / "models/baseline/model.onnx", tmp_path / "model.onnx")
    with np.load(repo / "data/prepared/validation.npz") as z:
        np.savez(
            tmp_path / "val.npz",
            image=z["image"],
            labels=z["labels"],
            slice__zeros=z["labels"] == 0,
        )
    byo = [
        "model=onnx_file",
        f"model.path={tmp_path / 'model.onnx'}",
        f"model.data={tmp_path / 'val.npz'}",
        "technique=[int8_dynamic,distill]",
    ]
    dvc(repo, "exp", "run", "-n", "byo", *overrides(*byo))
    summary = load(repo, "reports/summary.json")
    assert summary["model"] == "onnx_file"
    assert summary["candidates"]["distill"]["verdict"] == "NOT APPLICABLE"
    assert "torch" in summary["candidates"]["distill"]["reason"]
    assert summary["candidates"]["int8_dynamic"]["verdict"] in VERDICTS
    assert "zeros" in load(repo, "reports/validation/int8_dynamic/validation.json")["slices"]
    assert "| distill | **NOT APPLICABLE** |" in (repo / "reports/dashboard.md").read_text()


def test_team_remote_a_clone_pulls_and_reruns_only_the_host_check(
    repo: Path, tmp_path: Path
) -> None:
    remote, clone = tmp_path / "team-remote", tmp_path / "clone"
    dvc(repo, "remote", "add", "-d", "team", str(remote))
    run(repo, "git", "add", "-A")  # dvc.lock, params.yaml, the remote and the small evidence
    run(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "evidence")
    dvc(repo, "push")

    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    dvc(clone, "pull")
    out = dvc(clone, "repro").stdout
    ran = ran_stages(out)
    replayed = [line for line in out.splitlines() if "is cached - skipping run" in line]
    assert ran == ["host"] and replayed == [], (
        f"stages that ran in the clone: {ran}; replayed from the run-cache: {replayed}\n{out}"
    )

    patterns = ["data/**/*", "models/**/*", "reports/**/*"]
    pulled, first = digest(clone, patterns), digest(repo, patterns)
    assert "models/baseline/model.onnx" in pulled
    assert any(f.endswith("/latencies.csv") for f in pulled)
    assert pulled == {f: first.get(f) for f in pulled}

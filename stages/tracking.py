"""MLflow logging from the evidence files: one parent run per distinct evidence, a child per
candidate. The report stage logs; `python -m stages.tracking` logs the current evidence again
(e.g. after a failure, or to a team server given by MLFLOW_TRACKING_URI) and, once logged,
rewrites the tracking record and the dashboard's MLflow line to say where it went.

The record names no run id and no path of this machine: the parent run carries the tag
`evidence` (sha256 of the summary and of every file logged with it), so a UI filter
`tags.evidence = '…'` or `mlflow.search_runs(filter_string=...)` finds it in any copy of the store,
and logging the same evidence again reuses that run instead of adding another."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from stages import params as config
from stages.evidence_key import evidence_key
from stages.git import git_commit
from stages.storage import read_json, write_json, write_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Fail in seconds, not minutes, when a tracking server is unreachable (users may override).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EVIDENCE_TAG = "evidence"
LADDER_TAG = "ladder_stack"  # a rung's control stack (stack_tag); ladder_rung, ladder_previous_run
# The experiment tag that marks an experiment as model training (runs and metrics) rather than
# GenAI (traces); MLflow exports no constant for it. MLflow 3's UI takes its view from the URL
# (`?workflowType=machine_learning` on an experiment's address) or its sidebar switch.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI


def repo_root() -> Path:
    """The repository root; DVC_ROOT points there from queued and temp experiments."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def public_uri(uri: str, root: Path | None = None) -> str:
    """`uri` as committed evidence may hold it: a local store relative to `root` (default: the
    repository root), as `sqlite:///mlflow.db`; one outside `root` by file name only, as
    `sqlite:///<local>/x.db`; a server without user, password or query."""
    parts = urlsplit(uri)
    if parts.scheme not in ("sqlite", "file", ""):
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    if uri in ("databricks", "sqlite://"):
        return uri  # a workspace's default profile; an in-memory store
    prefix = "sqlite:///" if parts.scheme == "sqlite" else ""
    raw = uri.removeprefix("sqlite:///") if prefix else parts.path
    path = (Path.cwd() / raw).resolve()  # an absolute `raw` replaces the cwd
    root = (root or repo_root()).resolve()
    if path.is_relative_to(root):
        return prefix + path.relative_to(root).as_posix()
    return f"{prefix}<local>/{path.name}"


@dataclass(frozen=True)
class Logged:
    record: dict[str, Any]  # what the tracking record holds: no run id, no local path
    parent_run: str  # the parent's run id in this store
    reused: bool  # the same evidence was already logged: nothing new was written


def log_run(summary: dict[str, Any], artifacts: dict[str, list[Path]], extra: list[Path]) -> Logged:
    """Log the pipeline run once per evidence: where it went (the record), which run holds it
    and whether it was there already. Raises on any tracking failure."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = f"workbench-{summary['model']}"
    experiment_id = ensure_experiment(experiment, uri)
    key = evidence_key(summary, artifacts, extra)
    names = {n: child_name(n, c) for n, c in summary["candidates"].items()}
    record = {
        "status": "logged",
        "uri": public_uri(uri),
        "experiment": experiment,
        "evidence": key,
        "parent_run": f"tags.{EVIDENCE_TAG} = '{key}'",
        "runs": names,
    }
    found = find_parent(mlflow.MlflowClient(), experiment_id, key)
    if found is not None:
        return Logged(record, found, reused=True)
    tags = {
        "git_commit": git_commit(),
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "host_fingerprint": summary["host"],
        "model": summary["model"],
        "target": summary["target"],
    }
    rung = ladder_tags(mlflow.MlflowClient(), experiment_id, summary, tags["target"])
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{summary['model']} on {summary['target']} · {key[:8]}",
        tags={**tags, **rung, EVIDENCE_TAG: key},
        description=_overview(summary, names),
    ) as parent:
        mlflow.log_params(_flat({"bench": summary["bench"], "budget": summary["budget"]}))
        for name, c in summary["candidates"].items():
            paths = artifacts.get(name, [])
            with mlflow.start_run(
                experiment_id=experiment_id,
                run_name=names[name],
                nested=True,
                tags={**tags, "technique": name, "verdict": c["verdict"]},
                description=_read_note(name, paths),
            ):
                mlflow.log_params(_flat({"technique": name, "options": c["options"]}))
                mlflow.log_metrics({k: float(v) for k, v in c["metrics"].items() if _number(v)})
                for path in paths:
                    if path.is_dir():
                        mlflow.log_artifacts(str(path), artifact_path=path.name)
                    elif path.exists():
                        mlflow.log_artifact(str(path))
        for path in extra:
            if path.exists():
                mlflow.log_artifact(str(path))
    return Logged(record, parent.info.run_id, reused=False)


def ensure_experiment(name: str, uri: str) -> str:
    """The experiment's id, created if missing: marked as model development, and, for a local
    sqlite store, with its artifacts at `<repo>/mlruns` rather than under the current folder
    (a DVC temp workspace is deleted after the run)."""
    import mlflow

    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is None:
        location = (repo_root() / "mlruns").as_uri() if uri.startswith("sqlite:") else None
        try:
            return mlflow.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})
        except mlflow.MlflowException:  # created meanwhile by a parallel queued experiment?
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
    return str(found.experiment_id)


def stack_tag(stack: list[str]) -> str:
    """The ladder tag's value for a control stack: `baseline -> distill -> int8_dynamic`."""
    return " -> ".join(["baseline", *stack])


def ladder_tags(
    client: MlflowClient, experiment_id: str, summary: dict[str, Any], target: str
) -> dict[str, str]:
    """The rung's lineage: its control stack, and on a stack the latest finished parent run of
    the rung below (the stack without its last step, same target), as `ladder_previous_run` and
    as MLflow's parent (the UI nests each rung under the one it climbed from)."""
    stack = list(summary.get("control", []))
    tags = {LADDER_TAG: stack_tag(stack), "ladder_rung": str(len(stack))}
    if not stack:
        return tags
    below = stack_tag(stack[:-1]).replace("'", "")
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.{LADDER_TAG} = '{below}' and tags.target = '{target}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs:
        tags["ladder_previous_run"] = tags["mlflow.parentRunId"] = runs[0].info.run_id
    return tags


def find_parent(client: MlflowClient, experiment_id: str, key: str) -> str | None:
    """The id of a finished parent run of this evidence (and of this DVC experiment, when DVC
    names one), or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{EVIDENCE_TAG} = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    dvc_exp = os.environ.get("DVC_EXP_NAME")
    for run in runs:
        if dvc_exp is None or run.data.tags.get("dvc_experiment") == dvc_exp:
            return str(run.info.run_id)
    return None


def child_name(name: str, c: dict[str, Any]) -> str:
    """A child run's name that reads on its own: `int8_dynamic · SHIP · 1.41x`."""
    speedup = c.get("metrics", {}).get("speedup_p50_b1")
    figure = f" · {speedup:.2f}x" if _number(speedup) else ""
    return f"{name} · {c['verdict'].upper()}{figure}"


def attach_dashboard(logged: Logged, dashboard: Path) -> None:
    """The dashboard as it now reads becomes the parent run's description and an artifact of
    it; nothing is written when the run already holds this text."""
    import mlflow

    if not dashboard.is_file():
        return
    client = mlflow.MlflowClient(tracking_uri())
    text = dashboard.read_text()
    if client.get_run(logged.parent_run).data.tags.get(NOTE_TAG) != text:
        client.set_tag(logged.parent_run, NOTE_TAG, text)
        client.log_artifact(logged.parent_run, str(dashboard))


MLFLOW_LINE = "MLflow: "  # the dashboard's line about logging starts with this


def logged_line(result: dict[str, Any]) -> str:
    """The dashboard's MLflow line (after MLFLOW_LINE) for a successful log."""
    return f"logged to `{result['uri']}`, parent run `{result['parent_run']}` (`make ui` to browse)"


def record_retry(result: dict[str, Any], tracking_json: Path, dashboard: Path) -> None:
    """After a successful retry: the tracking record says so, and so does the dashboard's
    MLflow line (replaced in place, the rest of the file kept byte for byte)."""
    write_json(tracking_json, result)
    if not dashboard.is_file():
        return  # no dashboard yet: the report stage writes one with the same line
    text = dashboard.read_text()
    lines = text.split("\n")
    new = MLFLOW_LINE + logged_line(result)
    at = [i for i, line in enumerate(lines) if line.startswith(MLFLOW_LINE)]
    if at:
        lines[at[-1]] = new
        write_text(dashboard, "\n".join(lines))
    else:
        write_text(dashboard, f"{text.rstrip()}\n\n{new}\n")


def artifacts_of(paths: Any, names: list[str]) -> dict[str, list[Path]]:
    """The evidence files logged with each candidate's run; `<name>.md` is its review note."""
    return {
        n: [
            Path(paths.review) / f"{n}.md",
            Path(paths.benchmark) / n / "benchmark.json",
            Path(paths.validation) / n / "validation.json",
            Path(paths.failures) / n,
            Path(paths.candidates) / n / "manifest.json",
        ]
        for n in names
    }


def _read_note(name: str, paths: list[Path]) -> str | None:
    notes = [p for p in paths if p.name == f"{name}.md" and p.is_file()]
    return notes[0].read_text() if notes else None


def _overview(summary: dict[str, Any], names: dict[str, str]) -> str:
    """The parent's description until the dashboard replaces it: one line per candidate."""
    rows = "".join(f"- {n}\n" for n in names.values())
    return f"# {summary['model']} on {summary['target']}\n\n{rows}"


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


def main() -> None:
    p = config.load()
    summary = read_json(Path(p.paths.summary), "report")
    logged = log_run(
        summary, artifacts_of(p.paths, list(summary["candidates"])), [Path(p.paths.tradeoff)]
    )
    dashboard = Path(p.paths.dashboard)
    record_retry(logged.record, Path(p.paths.tracking), dashboard)
    attach_dashboard(logged, dashboard)  # the dashboard as it now reads, with this line
    uri = logged.record["uri"]
    said = "already logged" if logged.reused else "logged"
    print(f"{said} to {uri}: parent run {logged.parent_run} ({logged.record['parent_run']})")
    print(f"updated {p.paths.tracking} and the MLflow line of {dashboard}")


if __name__ == "__main__":
    main()

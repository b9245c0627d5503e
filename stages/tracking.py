"""MLflow logging from the evidence files: one parent run per pipeline execution, a child per
candidate. The report stage logs; `python -m stages.tracking` logs the current evidence again
(e.g. after a failure, or to a team server given by MLFLOW_TRACKING_URI) and, once logged,
rewrites the tracking record and the dashboard's MLflow line to say where it went."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

# Fail in seconds, not minutes, when a tracking server is unreachable (users may override).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def repo_root() -> Path:
    """The repository root; DVC_ROOT points there from queued and temp experiments."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log(
    summary: dict[str, Any], artifacts: dict[str, list[Path]], extra: list[Path]
) -> dict[str, Any]:
    """Log the pipeline run; returns where it went. Raises on any tracking failure."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"workbench-{summary['model']}")
    tags = {
        "git_commit": git_commit(),
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "host_fingerprint": summary["host"],
        "model": summary["model"],
        "target": summary["target"],
    }
    children = {}
    with mlflow.start_run(
        run_name=f"{summary['model']} on {summary['target']}", tags=tags
    ) as parent:
        mlflow.log_params(_flat({"bench": summary["bench"], "budget": summary["budget"]}))
        for name, c in summary["candidates"].items():
            with mlflow.start_run(
                run_name=name,
                nested=True,
                tags={**tags, "technique": name, "verdict": c["verdict"]},
            ) as run:
                mlflow.log_params(_flat({"technique": name, "options": c["options"]}))
                mlflow.log_metrics({k: float(v) for k, v in c["metrics"].items() if _number(v)})
                for path in artifacts.get(name, []):
                    if path.is_dir():
                        mlflow.log_artifacts(str(path), artifact_path=path.name)
                    elif path.exists():
                        mlflow.log_artifact(str(path))
                children[name] = run.info.run_id
        for path in extra:
            if path.exists():
                mlflow.log_artifact(str(path))
    return {"status": "logged", "uri": uri, "parent_run": parent.info.run_id, "runs": children}


MLFLOW_LINE = "MLflow: "  # the dashboard's line about logging starts with this


def logged_line(result: dict[str, Any]) -> str:
    """The dashboard's MLflow line (after MLFLOW_LINE) for a successful log."""
    return f"logged to `{result['uri']}`, parent run `{result['parent_run']}` (`make ui` to browse)"


def record_retry(result: dict[str, Any], tracking_json: Path, dashboard: Path) -> None:
    """After a successful retry: the tracking record says so, and so does the dashboard's
    MLflow line (replaced in place, the rest of the file kept byte for byte)."""
    from stages.io import write_json, write_text

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
    """The evidence files logged with each candidate's run."""
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
    from stages import params as P
    from stages.io import read_json

    p = P.load()
    summary = read_json(Path(p.paths.summary), "report")
    result = log(
        summary, artifacts_of(p.paths, list(summary["candidates"])), [Path(p.paths.tradeoff)]
    )
    dashboard = Path(p.paths.dashboard)
    record_retry(result, Path(p.paths.tracking), dashboard)
    if dashboard.is_file():  # the dashboard as it now reads, with the line of this run
        import mlflow

        mlflow.MlflowClient(result["uri"]).log_artifact(result["parent_run"], str(dashboard))
    print(f"logged to {result['uri']}: parent run {result['parent_run']}")
    print(f"updated {p.paths.tracking} and the MLflow line of {dashboard}")


if __name__ == "__main__":
    main()

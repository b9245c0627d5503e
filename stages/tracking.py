"""MLflow logging from the evidence files: one parent run per pipeline execution, a child per
candidate. Only the report stage imports it. `python -m stages.tracking` logs the current
evidence again (e.g. to a team server given by MLFLOW_TRACKING_URI) without touching any file."""

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
        summary,
        artifacts_of(p.paths, list(summary["candidates"])),
        [Path(p.paths.dashboard), Path(p.paths.tradeoff)],
    )
    print(f"logged to {result['uri']}: parent run {result['parent_run']}")


if __name__ == "__main__":
    main()

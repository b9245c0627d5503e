"""The benchmark evidence the gate compares, committed at a revision or in the working tree, and
the setup (model, target, machine class, timing protocol) each was made in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stages import history as history_log
from stages import params as config
from stages.git import show
from stages.storage import EvidenceError, read_json


def committed(path: Path, against: str) -> dict[str, Any] | None:
    """The evidence file as committed at `against`; None when it was never committed."""
    text = show(against, path.as_posix())
    if text is None:
        return None
    try:
        return checked(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise EvidenceError(
            f"{path} at {against} is malformed ({type(e).__name__}: {e}); commit a complete "
            "benchmark (`dvc repro` then `git add` it) before re-benchmarking against it"
        ) from None


def checked(data: dict[str, Any]) -> dict[str, Any]:
    """The evidence, once the keys the gate reads are known to be there (KeyError if not)."""
    if data.get("status") == "ok":
        for b in data["batches"]:
            _ = (b["batch_size"], b["noise_floor"], b["speedup"]["p50"]["low"])
            _ = (b["speedup"]["p50"]["high"], b["speedup"]["p50"]["estimate"])
    return data


def machine(host: dict[str, Any]) -> str:
    """The machine class of a host description: timings compare only within one."""
    return f"{host['cpu_model']} ({host['architecture']}, {host['logical_cores']} logical cores)"


def setup(params: dict[str, Any], host: dict[str, Any]) -> dict[str, str]:
    """What a timing compares within: model, target and machine class (`history_log.SETUP`), and the
    timing protocol, which keeps the history's series apart."""
    return {
        "model": params["model"]["name"],
        "target": params["target"]["name"],
        "machine": machine(host),
        "protocol": history_log.protocol(params.get("bench") or {}),  # not compared with committed
    }


def committed_setup(against: str, host_path: Path) -> dict[str, str]:
    texts = {f: show(against, f) for f in (config.PARAMS_FILE.as_posix(), host_path.as_posix())}
    if missing := [f for f, t in texts.items() if t is None]:
        raise EvidenceError(
            f"no committed {' or '.join(missing)} at {against}: the gate cannot tell which "
            "model, target and machine its evidence is for; commit them with the evidence"
        )
    params_text, host_text = texts.values()
    try:
        return setup(yaml.safe_load(params_text or ""), json.loads(host_text or ""))
    except (yaml.YAMLError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise EvidenceError(
            f"params.yaml or {host_path} at {against} is malformed ({type(e).__name__}: {e})"
        ) from None


def refuse_other_setup(ours: dict[str, str], theirs: dict[str, str], against: str) -> None:
    """Evidence of another model, target or machine class says nothing about this one (another
    timing protocol only times the same thing otherwise: it is compared)."""
    if diff := [k for k in history_log.SETUP if ours[k] != theirs[k]]:
        sides = "; ".join(f"{k}: {theirs[k]!r} at {against}, {ours[k]!r} here" for k in diff)
        raise EvidenceError(
            f"--against {against} holds evidence for another {' and '.join(diff)} ({sides}): "
            "re-benchmark against a commit made with the same model, target and machine class"
        )


def read_host(path: Path) -> dict[str, Any]:
    host = read_json(path, "host")
    if not isinstance(host, dict):
        raise EvidenceError(f"{path} is not a host description: rerun `dvc repro host`")
    return host


def read_evidence(path: Path) -> dict[str, Any]:
    try:
        return checked(read_json(path, "benchmark"))
    except (KeyError, TypeError, AttributeError) as e:
        raise EvidenceError(
            f"{path} is malformed ({type(e).__name__}: {e}): rerun `dvc repro -f -s benchmark`"
        ) from None

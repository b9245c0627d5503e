"""Stage `host`: validate params, check the target, and fingerprint this machine.

Always re-run by DVC; every other stage depends on its output, so bad params stop the pipeline
here, before anything is removed or recomputed, and a new machine re-runs what depends on it.
"""

from __future__ import annotations

from pathlib import Path

from stages import params as P
from stages.cli import run
from stages.io import write_json
from stages.measure.peak import describe_host, fingerprint
from stages.runtime import check_target_runs


def main() -> None:
    p = P.load()
    check_target_runs(p.target)  # a test session on the provider, not only its listing
    description = describe_host()
    write_json(Path(p.paths.host), {"fingerprint": fingerprint(description), **description})
    print(f"host {fingerprint(description)}: {description['cpu_model']}")


if __name__ == "__main__":
    run(main)

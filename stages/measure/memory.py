"""Peak memory of one side, in a fresh interpreter so neither side inherits the other's arenas.

Run as `python -m stages.measure.memory MODEL FEEDS_NPZ CALLS SETTINGS_JSON`; prints JSON.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from stages.runtime import open_session


def measure(model: Path, feeds: Path, calls: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Run `calls` inferences in a child process; bytes of resident memory it needed."""
    cmd = [sys.executable, "-m", "stages.measure.memory", str(model), str(feeds), str(calls)]
    done = subprocess.run(
        [*cmd, json.dumps(settings)], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {model} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(model: str, feeds_path: str, calls: int, settings: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime  # noqa: F401  (loaded before the baseline reading, as in a server)

    with np.load(feeds_path) as z:
        feeds = {k: z[k] for k in z.files}
    before = psutil.Process().memory_info().rss  # interpreter, numpy and onnxruntime loaded
    sess = open_session(Path(model), settings)
    loaded = psutil.Process().memory_info().rss
    for _ in range(calls):
        sess.run(None, feeds)
    peak = _high_water_mark()
    return {
        "rss_before_load_bytes": before,
        "rss_after_load_bytes": loaded,
        "peak_rss_bytes": peak,
        "peak_over_start_bytes": peak - before,  # what the model and its runs added
        "calls": calls,
    }


def _high_water_mark() -> int:
    """Peak resident bytes of this process image. VmHWM restarts at exec; ru_maxrss would carry
    the forked parent's peak over, so it is the fallback only where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


if __name__ == "__main__":
    model_arg, feeds_arg, calls_arg, settings_arg = sys.argv[1:5]
    print(json.dumps(_child(model_arg, feeds_arg, int(calls_arg), json.loads(settings_arg))))

"""Stage `peak`: this machine's practical peak on the target's threads, once per timing key
(reports/host/timing.json)."""

from __future__ import annotations

from pathlib import Path

from stages import params as config
from stages.cli import run
from stages.measure.peak_rates import measure_peak
from stages.runtime import threads
from stages.storage import read_json, write_json


def main() -> None:
    p = config.load()
    timing_key = read_json(Path(p.paths.host_timing), "host")
    figures = measure_peak(threads(p.target))
    write_json(Path(p.paths.peak), {"fingerprint": timing_key["fingerprint"], **figures})
    print(
        f"peak: fp32 {figures['fp32_matmul_gflops_best']} GFLOP/s, "
        f"int8 {figures['int8_matmul_gops_best']} GOP/s, "
        f"copy {figures['copy_bandwidth_gbs_best']} GB/s"
    )


if __name__ == "__main__":
    run(main)

"""Wall time of `scdrugmap demo` in a fresh temporary folder, and where it goes.

python -m benchmarks.demo_time [--scale 1.0] [--seed 0]

Prints each stage's wall and CPU seconds (writing the files, ingest, each embedding,
each embedding × classifier's evaluations, the report, the predictor), the total and
the load average before and after, since on a shared machine the wall figure means
something only next to how busy the machine was (the CPU one moves less).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="the demo's --scale")
    parser.add_argument("--seed", type=int, default=0, help="the demo's --seed")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average before: {_load()}", flush=True)
    started = time.perf_counter()
    from scdrugmap.workflows.demo import run_demo

    imported = time.perf_counter() - started
    root = Path(tempfile.mkdtemp(prefix="scdrugmap-demo-time-"))
    try:
        outcome = run_demo(root, seed=args.seed, scale=args.scale)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - started
    print(f"{'stage':<32} {'wall':>9} {'cpu':>9}")
    print(f"{'import':<32} {imported:7.1f} s")
    for stage, seconds in outcome.stages.items():
        print(f"{stage:<32} {seconds:7.1f} s {outcome.stage_cpu[stage]:7.1f} s")
    other = outcome.seconds - sum(outcome.stages.values())
    print(f"{'other':<32} {other:7.1f} s")
    if outcome.skipped:
        print(outcome.skipped)
    print(f"load average after: {_load()}")
    print(f"demo wall {wall:.1f} s")


if __name__ == "__main__":
    main()

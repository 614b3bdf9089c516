"""Wall time of `scdrugmap --help` and `scdrugmap sql` (target: under 1 s each).

python -m benchmarks.cli_startup
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.synthetic_store import embedding_store


def wall(args: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "scdrugmap.cli", *args], check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    root = Path(tempfile.mkdtemp())
    try:
        store = embedding_store(root / "store", 2, 10_000, 8)
        print(f"scdrugmap --help: {wall(['--help']):.3f} s")
        query = "SELECT dataset_id, label, count(*) FROM cells GROUP BY ALL"
        print(f"scdrugmap sql: {wall(['--store', str(store.path), 'sql', query]):.3f} s")
        print(f"scdrugmap datasets: {wall(['--store', str(store.path), 'datasets']):.3f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

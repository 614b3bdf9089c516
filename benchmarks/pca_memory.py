"""Peak RSS of `scdrugmap embed --model pca` (fit and project) on real PC9 cells, repeated.

Both PC9 samples (14,600 cells with the full files in ../shared, else the quarter in
tests/data) are ingested through the real path, then the data set's rows are repeated
to 10x and 100x: the same real cells, so only the number of cells changes. Each size
runs `embed --model pca` in a fresh process, which reports its own peak resident memory
(VmHWM: getrusage's ru_maxrss would carry over the high-water mark of the process it was
forked from). Bounded streaming shows as a flat column.

    python -m benchmarks.pca_memory [--repeats 1,10,100] [--chunk-size 10000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import zarr

from benchmarks.pc9 import CELLS, TRIMMED_CELLS
from benchmarks.timing import own_peak_resident_mib
from scdrugmap import Store
from scdrugmap.store.catalog import connect
from scdrugmap.store.dataset_zarr import quiet_zarr
from tests.store_builders import ingest_pc9

DATASET = "pc9"


def repeat_rows(store: Store, times: int) -> None:
    """Append `times - 1` copies of the data set's cells to its counts, obs and catalog rows
    (AnnData's own appending on the stored zarr; copies get barcodes `<barcode>-<copy>`)."""
    if times == 1:
        return
    reader = store.reader(DATASET)
    n_cells = reader.n_cells
    counts = reader.read_rows(0, n_cells)
    obs = reader.read_obs()
    group = zarr.open_group(store.path / "datasets" / f"{DATASET}.zarr", mode="r+")
    x = ad.io.sparse_dataset(group["X"])
    copies = [obs.set_axis([f"{name}-{copy}" for name in obs.index]) for copy in range(times)]
    with quiet_zarr():
        for _ in range(times - 1):
            x.append(counts)
        ad.io.write_elem(group, "obs", pd.concat(copies))
    with connect(store.catalog_path, write=True) as con:
        con.execute(
            "INSERT INTO cells SELECT cells.* REPLACE (cell_index + copy * ? AS cell_index, "
            "barcode || '-' || copy AS barcode) FROM cells, range(1, ?) AS r(copy) "
            "WHERE dataset_id = ?",
            [n_cells, times, DATASET],
        )
        con.execute(
            "UPDATE datasets SET n_cells = n_cells * ?, n_sensitive = n_sensitive * ?, "
            "n_resistant = n_resistant * ?, n_unknown = n_unknown * ? WHERE dataset_id = ?",
            [times, times, times, times, DATASET],
        )


def measure(store: Path, chunk_size: int) -> None:
    """The child: the real command in this process, then its peak memory as the last line."""
    from scdrugmap.cli import main
    from scdrugmap.workflows import api, embed  # noqa: F401  (imported before the clock starts)

    started = time.perf_counter()
    main(
        ["--store", str(store), "embed", "--model", "pca", "--chunk-size", str(chunk_size)],
        standalone_mode=False,
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"peak_mib": own_peak_resident_mib(), "seconds": seconds}))


def run_child(store: Path, chunk_size: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.pca_memory", "--measure", str(store)]
    done = subprocess.run(
        [*command, "--chunk-size", str(chunk_size)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", default="1,10,100", help="copies of the PC9 cells")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores are built")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.measure, args.chunk_size)
        return
    root = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        base = Store(root / "base")
        ingest_pc9(base, CELLS.parent)
        n_base = base.reader(DATASET).n_cells
        print(
            f"embed --model pca (fit and project), real PC9 cells "
            f"({n_base:,} a copy{', trimmed copy' if TRIMMED_CELLS else ''}), "
            f"--chunk-size {args.chunk_size}; a fresh process per size"
        )
        for times in (int(t) for t in args.repeats.split(",")):
            folder = root / f"x{times}"
            shutil.copytree(base.path, folder)
            store = Store(folder)
            repeat_rows(store, times)
            reader = store.reader(DATASET)
            in_memory = (reader.indptr[-1] * 8 + reader.indptr.nbytes) / 2**20
            figures = run_child(folder, args.chunk_size)
            print(
                f"{times:>4}x {reader.n_cells:>10,} cells: peak RSS "
                f"{figures['peak_mib']:,.0f} MiB, {figures['seconds']:.1f} s "
                f"({reader.n_cells / figures['seconds']:,.0f} cells/s; the counts alone "
                f"would be {in_memory:,.0f} MiB in memory)",
                flush=True,
            )
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

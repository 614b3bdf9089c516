"""The real PC9 cells (GSE147405, untreated) the benchmarks run on, and a store of them."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).parents[1].parent / "shared"
CELLS = SHARED / "data" / "pc9_erlotinib" / "Day11_control.txt.gz"


def pc9_store(folder: Path, table, n_cells: int):
    """A store in `folder` whose data set 'pc9' holds the first `n_cells` cells of `table`
    (one sample, 'a', labelled sensitive), ingested through the real path."""
    from scdrugmap.data.prepare import IngestOptions
    from scdrugmap.store.store import Store
    from tests.data_files import write_sample

    store = Store(folder / "store")
    sample = write_sample(folder / "cells.tsv", table.counts[:n_cells], table.genes, "a")
    store.ingest([sample], IngestOptions("pc9", samples=["a"], labels=["sensitive"]))
    return store

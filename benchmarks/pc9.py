"""The real PC9 cells (GSE147405, untreated) the benchmarks run on, and a store of them.

The full files live in ../shared (`data/pc9_erlotinib/`, `vocab/`). Where they are absent
the benchmarks fall back to the repository's tests/data: a seeded quarter of the cells
(1,500 of the 6,000 control cells, every gene) and the same published vocabularies; a note
says so, since figures on the trimmed cells are not comparable with full-file ones.
"""

from __future__ import annotations

from pathlib import Path

FULL = Path(__file__).parents[1].parent / "shared"
TRIMMED = Path(__file__).parents[1] / "tests" / "data"
_FULL_CELLS = FULL / "data" / "pc9_erlotinib" / "Day11_control.txt.gz"
_TRIMMED_CELLS = TRIMMED / "pc9_erlotinib" / "Day11_control.txt.gz"

TRIMMED_CELLS = not _FULL_CELLS.is_file()
CELLS = _TRIMMED_CELLS if TRIMMED_CELLS else _FULL_CELLS
# The folder holding `vocab/<model>/`: tests/data keeps the same layout, with whole copies.
SHARED = FULL if (FULL / "vocab").is_dir() else TRIMMED

if TRIMMED_CELLS:
    print(
        f"note: the full PC9 file ({_FULL_CELLS}) is absent; using the trimmed copy in "
        f"tests/data ({CELLS}: 1,500 of the 6,000 control cells); figures are not "
        "comparable with runs on the full file",
        flush=True,
    )


def pc9_store(folder: Path, table, n_cells: int):
    """A store in `folder` whose data set 'pc9' holds the first `n_cells` cells of `table`
    (one sample, 'a', labelled sensitive), ingested through the real path."""
    from scdrugmap import Store
    from scdrugmap.data.prepare import IngestOptions
    from tests.data_files import write_sample

    if n_cells > table.counts.shape[0]:
        print(
            f"note: {n_cells:,} cells asked for, {table.counts.shape[0]:,} in {CELLS.name}"
            f"{' (trimmed copy)' if TRIMMED_CELLS else ''}; the store holds all of them",
            flush=True,
        )
    store = Store(folder / "store")
    sample = write_sample(folder / "cells.tsv", table.counts[:n_cells], table.genes, "a")
    store.ingest([sample], IngestOptions("pc9", samples=["a"], labels=["sensitive"]))
    return store

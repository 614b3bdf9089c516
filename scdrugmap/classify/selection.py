"""Which cells a run may use: the data sets chosen when no `--where` is given, and the
cells left out because their embedding rows say nothing about them.

A run over "every data set" breaks as soon as the store holds data sets that were
never embedded under the key (the SCAD tables beside a PC9 `pca`), so the default
is the data sets that hold the embedding, said aloud. Cells an embedding saw nothing
of (the `failures` table) share one meaningless vector: training or scoring on them
would reward a classifier for what the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from scdrugmap.errors import InputError, StoreError


@dataclass(frozen=True)
class Chosen:
    """The SQL condition a run queries and records, and a line for the user when the
    condition was chosen for them."""

    where: str | None
    message: str | None = None


@dataclass(frozen=True)
class LeftOut:
    """Cells (dataset_id, cell_index) a run must not use, and why, for its note."""

    cells: pd.DataFrame
    reason: str


def _in_list(column: str, values: list[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def embedding_keys(store) -> list[str]:
    return store.query("SELECT DISTINCT key FROM embeddings ORDER BY key")["key"].tolist()


def datasets_holding(store, key: str) -> list[str]:
    """Labelled data sets with an embedding under `key` (cells uploaded for prediction are
    embedded under the predictor's key too, but carry no label); an unknown key is
    refused, naming the keys that do exist."""
    held = store.query(
        "SELECT DISTINCT e.dataset_id FROM embeddings e JOIN datasets d USING (dataset_id) "
        "WHERE e.key = ? AND d.n_sensitive + d.n_resistant > 0 ORDER BY e.dataset_id",
        [key],
    )["dataset_id"].tolist()
    if not held:
        known = embedding_keys(store)
        raise StoreError(
            f"no embedding {key!r} of labelled cells in the store; "
            + (
                f"embeddings: {', '.join(known)}"
                if known
                else "embed a data set first (`scdrugmap embed --model pca`)"
            )
        )
    return held


def choose_for_embedding(store, key: str, where: str | None) -> Chosen:
    """`where` as given, or the data sets holding `key` when none is given."""
    held = datasets_holding(store, key)
    if where:
        return Chosen(where)
    return Chosen(
        _in_list("dataset_id", held),
        f"no --where given: using the data sets that hold embedding {key!r}: {', '.join(held)}",
    )


def choose_counts(store, where: str | None) -> Chosen:
    """`where` as given, or the data sets of raw counts (what a foundation model reads)."""
    if where:
        return Chosen(where)
    counts = store.query(
        "SELECT dataset_id FROM datasets WHERE value_type = 'counts' ORDER BY dataset_id"
    )["dataset_id"].tolist()
    if not counts:
        raise InputError("no data set of raw counts in the store; foundation models need counts")
    return Chosen(
        _in_list("dataset_id", counts),
        f"no --where given: using the data sets of raw counts: {', '.join(counts)}",
    )


def failed_cells(store, key: str) -> LeftOut:
    """Cells `key` saw nothing of, or that its authors' data-set filter leaves out (both
    listed in `failures`, with the reason)."""
    cells = store.query(
        "SELECT dataset_id, cell_index FROM failures WHERE key = ? ORDER BY dataset_id, cell_index",
        [key],
    )
    return LeftOut(
        cells,
        f"the embedding saw nothing of or filtered out (see the failures table for {key!r})",
    )


def leave_out(cells: pd.DataFrame, left_out: list[LeftOut]) -> tuple[pd.DataFrame, list[str]]:
    """`cells` less every LeftOut, and one phrase per reason that removed any cell."""
    notes = []
    for group in left_out:
        if group.cells.empty or cells.empty:
            continue
        keys = pd.MultiIndex.from_frame(cells[["dataset_id", "cell_index"]])
        dropped = keys.isin(pd.MultiIndex.from_frame(group.cells[["dataset_id", "cell_index"]]))
        if dropped.any():
            cells = cells[~dropped].reset_index(drop=True)
            notes.append(f"{int(dropped.sum())} cells {group.reason} are left out")
    return cells, notes

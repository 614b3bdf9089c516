"""Which stored cells are the same cells: a data set's overlaps with the others, by
`cells.content_hash` (see `scdrugmap.data.content_hash` and the `shared_cells` view)."""

from __future__ import annotations

from pathlib import Path

from scdrugmap.store.catalog import connect

# Stores from before content hashes lack the view until a write upgrades them.
HAS_SHARED_CELLS_VIEW = "SELECT count(*) FROM duckdb_views() WHERE view_name = 'shared_cells'"

_SHARED = """
SELECT other_dataset_id, n_shared, n_conflicting FROM shared_cells
WHERE dataset_id = ? ORDER BY n_shared DESC, other_dataset_id
"""

# Within one data set: cells repeating an earlier cell's content, and cells whose content
# occurs in the data set under both labels. Empty cells are left out, as in shared_cells.
_DUPLICATES = """
WITH groups AS (
    SELECT content_hash, count(*) AS n,
           bool_or(label = 'sensitive') AND bool_or(label = 'resistant') AS both_labels
    FROM cells
    WHERE dataset_id = ? AND content_hash IS NOT NULL AND n_genes > 0
    GROUP BY content_hash
)
SELECT coalesce(sum(n - 1), 0), coalesce(sum(n) FILTER (WHERE both_labels), 0) FROM groups
"""


def dataset_overlaps(catalog: Path, dataset_id: str) -> dict:
    """How far `dataset_id` repeats cells: `shared_cells`, one entry per other stored data
    set holding some of its cells ({dataset_id, n_shared, n_conflicting}, most shared
    first), `n_duplicates` (its cells that repeat another of its own cells) and
    `n_duplicates_conflicting` (its cells whose content it also holds under the opposite
    label). A store from before content hashes, never written since, reports nothing."""
    with connect(catalog) as con:
        if not con.execute(HAS_SHARED_CELLS_VIEW).fetchone()[0]:
            return {"shared_cells": [], "n_duplicates": 0, "n_duplicates_conflicting": 0}
        shared = [
            {"dataset_id": other, "n_shared": int(n), "n_conflicting": int(conflicting)}
            for other, n, conflicting in con.execute(_SHARED, [dataset_id]).fetchall()
        ]
        duplicates, conflicting = con.execute(_DUPLICATES, [dataset_id]).fetchone()
    return {
        "shared_cells": shared,
        "n_duplicates": int(duplicates),
        "n_duplicates_conflicting": int(conflicting),
    }

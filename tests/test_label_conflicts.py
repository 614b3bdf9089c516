"""One file given twice with opposite labels is refused, naming the cells; a few tiny cells
that meet by chance are only warned of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scdrugmap import Store
from scdrugmap.data.label_conflicts import REFUSE_FROM, label_conflicts
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.errors import InputError


def test_the_same_file_as_treated_and_untreated_is_refused(real_data: Path, tmp_path) -> None:
    control = real_data / "pc9_erlotinib" / "Day11_control.txt.gz"
    store = Store(tmp_path / "store")
    options = IngestOptions(
        "twice", samples=["untreated", "treated"], labels=["sensitive", "resistant"]
    )
    with pytest.raises(InputError, match="cells are identical to a cell with the opposite") as got:
        store.ingest([control, control], options)
    message = str(got.value)
    assert ": 3000 cells are identical" in message  # each of the 1,500 cells, twice
    assert "(sensitive) = " in message and "(resistant)" in message
    assert "a file given twice with opposite labels?" in message
    assert not store.exists() or store.datasets().empty


def test_a_few_chance_coincidences_are_warned_of() -> None:
    hashes = np.array(["a", "a", "b", "c", "d"])
    labels = np.array(["sensitive", "resistant", "sensitive", "resistant", "unknown"])
    n_genes = np.array([1, 1, 300, 280, 200])
    warned = label_conflicts("x.tsv", hashes, labels, n_genes, ["c1", "c2", "c3", "c4", "c5"])
    assert warned == [
        "x.tsv: 2 cells are identical to a cell with the opposite label (the same genes with "
        "the same values), e.g. 'c1' (sensitive) = 'c2' (resistant); "
        "'c2' (resistant) = 'c1' (sensitive)"
    ]
    assert REFUSE_FROM > 2
    empty = label_conflicts("x.tsv", hashes, labels, np.zeros(5, int), ["c"] * 5)
    assert empty == [], "empty cells are all alike without being copies"

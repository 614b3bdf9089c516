"""Embedding arrays: rows read back exactly, by either read path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scdrugmap.store.embedding_array import EmbeddingArray


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_read_rows_matches_the_written_values(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((103, 6)).astype(dtype)
    array = EmbeddingArray.create(
        tmp_path / "e.zarr", n_cells=103, dim=6, chunk_size=10, dtype=dtype, attrs={}
    )
    for chunk in range(array.n_chunks):
        start, stop = array.chunk_bounds(chunk)
        array.write_chunk(chunk, values[start:stop], np.ones(stop - start))
    selections = {
        "contiguous across chunks": np.arange(7, 58),
        "scattered": np.sort(rng.choice(103, size=40, replace=False)),
        "last row": np.array([102]),
        "none": np.array([], dtype=np.int64),
    }
    zarr_path = EmbeddingArray(array.path)
    zarr_path.__dict__["_raw_chunks"] = False
    assert array._raw_chunks
    for name, rows in selections.items():
        expected = values[rows].astype(np.float32)
        np.testing.assert_array_equal(array.read_rows(rows), expected, err_msg=name)
        np.testing.assert_array_equal(zarr_path.read_rows(rows), expected, err_msg=name)
    assert array.done_chunks().all()


def test_a_chunk_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    array = EmbeddingArray.create(
        tmp_path / "e.zarr", n_cells=10, dim=3, chunk_size=4, dtype="float32", attrs={}
    )
    with pytest.raises(ValueError, match="chunk 2"):
        array.write_chunk(2, np.zeros((4, 3)), np.zeros(4))
    assert not array.done_chunks().any()

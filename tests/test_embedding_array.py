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


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_scattered_rows_land_in_the_callers_array(tmp_path: Path, dtype: str) -> None:
    """Rows gathered chunk by chunk straight into a slice of a larger array (as a selection
    over several data sets is read), leaving the rest of it untouched."""
    rng = np.random.default_rng(1)
    values = rng.standard_normal((250, 4)).astype(dtype)
    array = EmbeddingArray.create(
        tmp_path / "e.zarr", n_cells=250, dim=4, chunk_size=16, dtype=dtype, attrs={}
    )
    for chunk in range(array.n_chunks):
        start, stop = array.chunk_bounds(chunk)
        array.write_chunk(chunk, values[start:stop], np.ones(stop - start))
    selections = {
        "every fifth row": np.arange(0, 250, 5),
        "one row of each chunk": np.arange(3, 250, 16),
        "runs and gaps": np.r_[np.arange(10, 40), np.arange(41, 90, 3), [249]],
    }
    for name, rows in selections.items():
        whole = np.full((len(rows) + 5, 4), -7.0, dtype=np.float32)
        returned = array.read_rows(rows, whole[2 : 2 + len(rows)])
        np.testing.assert_array_equal(whole[2 : 2 + len(rows)], values[rows], err_msg=name)
        assert (whole[:2] == -7).all() and (whole[2 + len(rows) :] == -7).all(), name
        assert np.shares_memory(returned, whole), name

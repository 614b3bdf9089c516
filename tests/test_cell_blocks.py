"""Cell blocks for models that attend across cells: defined by the data, not the chunking."""

from __future__ import annotations

import numpy as np
import pytest

from scdrugmap.embed.cell_blocks import BlockedChunks, BlockIndex, sample_blocks


def test_blocks_are_consecutive_cells_of_one_sample_from_its_first_cell() -> None:
    samples = np.array(["a", "a", "b", "a", "b", "a", "a", "b", "c"])
    blocks = sample_blocks(samples, block_size=2)
    # a: cells 0,1 | 3,5 | 6 ; b: 2,4 | 7 ; c: 8 -- numbered by first cell
    assert blocks.tolist() == [0, 0, 1, 2, 1, 2, 3, 4, 5]


def test_one_block_per_sample_when_the_block_is_large() -> None:
    samples = np.array([3, 1, 3, 1, 2])
    assert sample_blocks(samples, block_size=100).tolist() == [0, 1, 0, 1, 2]


def test_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block_size"):
        sample_blocks(np.array(["a"]), 0)


def test_rows_of_a_range_are_whole_blocks() -> None:
    blocks = sample_blocks(np.array(["a"] * 5 + ["b"] * 3), block_size=2)
    index = BlockIndex(blocks)
    assert index.rows(1, 2).tolist() == [0, 1]
    assert index.rows(3, 6).tolist() == [2, 3, 4, 5, 6]
    assert index.rows(4, 4).tolist() == []


def _recording_embedder(calls: list[np.ndarray], blocks: np.ndarray):
    """Embeds a row as (its block, the block's size among the given rows): wrong company
    shows up as a wrong size."""

    def embed_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(rows)
        sizes = np.array([np.sum(blocks[rows] == blocks[r]) for r in rows], dtype=np.float32)
        values = np.stack([blocks[rows].astype(np.float32), sizes], axis=1)
        return values, rows.astype(np.float32) / 10

    return embed_rows


def _embed_in_chunks(samples: np.ndarray, block_size: int, chunk_size: int):
    blocks = sample_blocks(samples, block_size)
    calls: list[np.ndarray] = []
    embed_rows = _recording_embedder(calls, blocks)
    chunks = BlockedChunks(BlockIndex(blocks), 2)
    n = len(samples)
    # Every chunk is planned before any is assembled, as a reader thread may run ahead.
    plans = [chunks.plan(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    parts = [chunks.assemble(plan, *embed_rows(plan.fresh)) for plan in plans]
    values = np.vstack([p[0] for p in parts])
    coverage = np.concatenate([p[1] for p in parts])
    return blocks, values, coverage, np.concatenate(calls)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 20])
def test_every_chunk_size_embeds_each_cell_with_its_whole_block(chunk_size: int) -> None:
    samples = np.array(["a"] * 9 + ["b"] * 2 + ["a"] * 3 + ["c"] * 6)
    blocks, values, coverage, _ = _embed_in_chunks(samples, 4, chunk_size)
    np.testing.assert_array_equal(values[:, 0], blocks)
    np.testing.assert_array_equal(values[:, 1], np.bincount(blocks)[blocks])
    np.testing.assert_allclose(coverage, np.arange(20) / 10)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 7])
def test_a_block_cut_by_a_chunk_boundary_is_embedded_once(chunk_size: int) -> None:
    samples = np.array(["a"] * 10 + ["b"] * 7)
    _, _, _, embedded = _embed_in_chunks(samples, 4, chunk_size)
    assert sorted(embedded.tolist()) == list(range(17))

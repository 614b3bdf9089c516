"""Random numbers that belong to a cell: seeded by its own genes and counts.

Models whose reference code draws random numbers per cell (scGPT's binning
and gene sampling, UCE's gene sampling) draw here from a counter-based hash
of the cell's content, so a cell gets the same numbers, and the same
embedding, in any batch, chunk or order, and two runs agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scdrugmap.data.content_hash import splitmix64

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def uniform(bits: np.ndarray) -> np.ndarray:
    """[0, 1) doubles from 64-bit hashes, 53 bits of each."""
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class CellGenes:
    """A chunk's in-vocabulary expressed genes, grouped by cell in the data's column order."""

    tokens: np.ndarray
    values: np.ndarray
    cells: np.ndarray
    counts: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return np.r_[0, np.cumsum(self.counts)[:-1]].astype(np.int64)


def cell_seeds(genes: CellGenes, seed: int) -> np.ndarray:
    """One 64-bit seed per cell from its genes and values, whatever their order or company."""
    value_bits = genes.values.astype(np.float32).view(np.uint32).astype(np.uint64)
    per_gene = splitmix64(genes.tokens.astype(np.uint64) * _GOLDEN ^ value_bits)
    sums = np.zeros(len(genes.counts), dtype=np.uint64)
    np.add.at(sums, genes.cells, per_gene)
    return splitmix64(sums ^ splitmix64(np.full(len(sums), seed, dtype=np.uint64)))


def keyed_draws(seeds: np.ndarray, keys: np.ndarray, stream: np.uint64) -> np.ndarray:
    """A 64-bit hash per (cell seed, key): the random numbers of one named use."""
    return splitmix64(seeds ^ splitmix64(keys.astype(np.uint64) + stream))


def gene_draws(genes: CellGenes, seeds: np.ndarray, stream: np.uint64) -> np.ndarray:
    """One draw per (cell, expressed gene), keyed by the gene's token."""
    return keyed_draws(seeds[genes.cells], genes.tokens, stream)

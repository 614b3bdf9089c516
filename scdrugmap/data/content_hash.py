"""A content hash per cell: which genes it expresses and at what values, nothing else.

Public drug-response tables are redistributed and relabelled: the same cells turn up
under another drug's name, as byte-identical copies or with every label inverted, in
files whose gene columns come in another order or carry extra all-zero genes. A cell's
hash must therefore depend only on the *multiset* of its (gene identifier, value)
pairs, never on the order of the genes, on which file it came from, or on genes it does
not express. It is a multiset hash: every non-zero (gene, value) pair is mapped to a
pseudo-random 64-bit word and the words of a cell are added modulo 2^64, which is
commutative, so gene order cannot matter, and a zero value contributes no word, so an
extra all-zero gene (or an explicitly stored zero, or -0.0) cannot either. Two lanes
with independent keys make 128 bits, so an accidental collision among even 10^9 cells
has a probability near 10^-21.

Values are hashed as stored after preparation: the canonical float32 counts, or for
normalised tables (SCAD's z-scores) the values as read. Genes are named by the caller;
ingest passes the normalised identifiers (Ensembl version suffixes stripped), so two
files of the same cells that differ only in those suffixes agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from scipy import sparse

HASH_HEX_CHARS = 32  # two 64-bit lanes

# Odd multipliers spreading a value's 32 bits over 64 (one per lane), and the
# finaliser's constants (splitmix64, Steele et al. 2014).
_VALUE_MULTIPLIERS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03))
_COUNT_MULTIPLIERS = (np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))
# Added to each lane's sum before the last finaliser, so a cell expressing nothing does
# not hash to all zeros (the finaliser maps 0 to 0); such cells still share one hash.
_LANE_SEEDS = (np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344))
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array: a bijection that scrambles every
    bit. Cell hashes here and the per-cell random numbers of embed/cell_random.py use it."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def gene_keys(genes: Sequence[str]) -> np.ndarray:
    """Two independent 64-bit keys per gene identifier, shape (n_genes, 2): the halves of
    a 128-bit BLAKE2b digest of the name (once per gene, not per cell)."""
    digests = b"".join(
        hashlib.blake2b(str(g).encode("utf-8"), digest_size=16, person=b"scdrugmap-gene").digest()
        for g in genes
    )
    return np.frombuffer(digests, dtype="<u8").reshape(len(genes), 2)


def content_hashes(counts: sparse.csr_matrix, genes: Sequence[str]) -> np.ndarray:
    """One 32-character hex hash per cell (row) of `counts`, columns named by `genes`.

    Depends only on the multiset of the row's non-zero (gene, float32 value) pairs: not on
    gene order, nor on columns the row does not express (see the module docstring).
    Vectorised over all non-zeros at once; the only Python loop is one digest per gene."""
    matrix = sparse.csr_matrix(counts)
    if matrix.shape[1] != len(genes):
        raise ValueError(f"{matrix.shape[1]} columns but {len(genes)} gene names")
    if not matrix.has_canonical_format:  # a gene listed twice in a row would hash twice
        matrix = matrix.copy()
        matrix.sum_duplicates()
    n_cells = matrix.shape[0]
    values = np.asarray(matrix.data, dtype=np.float32)
    expressed = values != 0  # also drops -0.0, so it equals 0
    bits = values.view(np.uint32).astype(np.uint64)
    indices = np.asarray(matrix.indices, dtype=np.intp)
    indptr = np.asarray(matrix.indptr, dtype=np.int64)
    n_expressed = np.diff(np.concatenate([[0], np.cumsum(expressed, dtype=np.int64)])[indptr])
    keys = gene_keys(genes)
    lanes = []
    for lane in range(2):
        words = keys[:, lane][indices]
        words += bits * _VALUE_MULTIPLIERS[lane]  # distinct values of one gene never meet
        splitmix64(words)
        words[~expressed] = 0
        # Row sums modulo 2^64 from one running sum: uint64 arithmetic wraps, so the
        # difference of two prefix sums is the row's sum even after overflow, and empty
        # rows give 0 (np.add.reduceat would repeat a neighbour's word there).
        prefix = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(words, dtype=np.uint64)])
        sums = prefix[indptr[1:]] - prefix[indptr[:-1]]
        # The number of expressed genes enters too, and a last finaliser removes the
        # sum's linearity, so a collision needs equal counts and a 64-bit coincidence.
        sums += n_expressed.astype(np.uint64) * _COUNT_MULTIPLIERS[lane]
        sums += _LANE_SEEDS[lane]
        lanes.append(splitmix64(sums))
    return _hex(np.stack(lanes, axis=1).reshape(n_cells, 2))


def _hex(words: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 as n hex strings of 32 characters, big-endian, without a loop."""
    raw = words.astype(">u8").view(np.uint8).reshape(len(words), 16)
    chars = np.empty((len(words), HASH_HEX_CHARS), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    return chars.view(f"S{HASH_HEX_CHARS}").ravel().astype(f"U{HASH_HEX_CHARS}")

"""A 2-D map of predicted cells: the first two principal components of their embedding.

PCA rather than UMAP: it needs no extra package, is deterministic, runs in
one pass over a (dim x dim) covariance whatever the number of cells, and an
axis means the same thing for every upload of one predictor's embedding.
"""

from __future__ import annotations

import numpy as np

# Rows per step of the covariance pass, so a million-cell upload never holds a
# float64 copy of its whole embedding.
_BLOCK = 65_536


def principal_map(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cells x 2 coordinates, share of variance of each axis) of the rows of `features`.

    The sign of each axis is fixed (largest loading positive), so the same
    cells always draw the same picture.
    """
    n, dim = features.shape
    if n == 0:
        return np.empty((0, 2), dtype=np.float32), np.zeros(2)
    mean = features.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((dim, dim))
    for start in range(0, n, _BLOCK):
        block = features[start : start + _BLOCK].astype(np.float64) - mean
        scatter += block.T @ block
    values, vectors = np.linalg.eigh(scatter)
    order = np.argsort(values)[::-1][:2]
    axes = vectors[:, order]
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    flip = np.sign(axes[np.abs(axes).argmax(axis=0), range(2)])
    axes = axes * np.where(flip == 0, 1.0, flip)
    total = values.clip(min=0).sum()
    explained = np.zeros(2)
    explained[: len(order)] = values[order].clip(min=0) / total if total > 0 else 0.0
    coordinates = np.empty((n, 2), dtype=np.float32)
    for start in range(0, n, _BLOCK):
        block = features[start : start + _BLOCK].astype(np.float64) - mean
        coordinates[start : start + _BLOCK] = block @ axes
    return coordinates, explained

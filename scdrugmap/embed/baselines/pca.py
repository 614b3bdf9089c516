"""PCA of log1p-CP10k expression on highly variable genes: the cheap baseline.

Fitted once on the data sets chosen when its key is created; later data sets
and new cells are projected with that same fit, so they share one space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy import sparse

from scdrugmap.embed.baselines.base import FittedBaseline
from scdrugmap.embed.baselines.fit import FitSource, covariance, principal_axes
from scdrugmap.embed.baselines.saved_fit import SavedFit
from scdrugmap.progress import progress_step

# Cells standardised and projected at once: 1024 x 2,000 genes is 8 MB of float32 and
# 16 MB of float64, small beside any chunk, large enough for BLAS to run at full speed.
PROJECT_ROWS = 1024


class PCAEmbedder(FittedBaseline):
    name = "pca"
    n_passes: ClassVar[int] = 2  # the gene variances, then the covariance of the chosen genes
    defaults: ClassVar[dict] = {
        "n_components": 50,
        "n_top_genes": 2000,
        "max_fit_cells": 100_000,
        "seed": 0,
    }

    def __init__(self, fit: SavedFit, weights_sha256: str) -> None:
        super().__init__(fit, weights_sha256)
        self.mean = fit.arrays["mean"].astype(np.float32)
        self.scale = fit.arrays["scale"].astype(np.float32)
        # Projected in float64 and rounded once to float32: a float32 product's last bits
        # depend on how many rows BLAS gets at once, and an embedding must not depend on
        # the chunk size.
        self.components = fit.arrays["components"].astype(np.float64)
        self.dim = self.components.shape[0]

    @classmethod
    def fit(
        cls,
        sources: Sequence[FitSource],
        directory: Path,
        *,
        show_progress: bool = False,
        **options,
    ) -> PCAEmbedder:
        settings, panel = cls.variable_panel(sources, options, show_progress)
        with cls.fit_pass(2, sources, settings, show_progress) as advance:
            centre, cov, n_cells = covariance(
                sources, panel, settings["max_fit_cells"], settings["seed"], advance
            )
        scale = np.sqrt(np.diag(cov))
        scale[scale == 0] = 1.0
        n_components = min(settings["n_components"], len(panel), max(1, n_cells - 1))
        # Seconds to a minute for 2,000 genes, whatever the number of cells.
        with progress_step(show_progress, f"fitting {cls.name}: principal axes"):
            components, variances = principal_axes(cov / np.outer(scale, scale), n_components)
        settings["n_components"] = n_components
        arrays = {
            "genes": np.array(panel, dtype=str),
            "mean": centre,
            "scale": scale,
            "components": components,
            "explained_variance": variances,
        }
        SavedFit(arrays=arrays, settings=settings).save(directory)
        return cls.load(directory)

    def tokenize(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> sparse.csr_matrix:
        """The panel's expression, still sparse: standardising makes every value non-zero,
        so it waits for `embed`, a block of rows at a time."""
        return self.sparse_expression(counts, genes)

    def embed(self, batch: sparse.csr_matrix) -> np.ndarray:
        """Standardised in float32, projected in float64, rounded once to float32, in
        blocks of `PROJECT_ROWS` cells: a chunk's dense float64 panel at once was 160 MB
        for 10,000 cells. Rounded to float32, a row is the same in any block (checked bit
        for bit on the PC9 cells, in blocks of one cell to all of them)."""
        out = np.empty((batch.shape[0], self.dim), dtype=np.float32)
        for start in range(0, batch.shape[0], PROJECT_ROWS):
            block = batch[start : start + PROJECT_ROWS].toarray()
            block -= self.mean
            block /= self.scale
            out[start : start + PROJECT_ROWS] = block.astype(np.float64) @ self.components.T
        return out

"""PCA of log1p-CP10k expression on highly variable genes: the cheap baseline.

Fitted once on the data sets chosen when its key is created; later data sets
and new cells are projected with that same fit, so they share one space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

from scdrugmap.embed.baselines.expression import panel_matrix, transform
from scdrugmap.embed.baselines.fit import (
    FitSource,
    covariance,
    gene_moments,
    principal_axes,
    select_variable_genes,
    union_genes,
)
from scdrugmap.embed.baselines.saved_fit import ARRAYS, SavedFit, file_sha256

DEFAULTS = {"n_components": 50, "n_top_genes": 2000, "max_fit_cells": 100_000, "seed": 0}


class PCAEmbedder:
    name = "pca"
    lora_targets: tuple[str, ...] = ()
    requires_counts = False

    def __init__(self, fit: SavedFit, weights_sha256: str) -> None:
        self.genes = [str(g) for g in fit.arrays["genes"]]
        self.mean = fit.arrays["mean"].astype(np.float32)
        self.scale = fit.arrays["scale"].astype(np.float32)
        self.components = fit.arrays["components"].astype(np.float32)
        self.settings = fit.settings
        self.value_type = fit.settings["value_type"]
        self.dim = self.components.shape[0]
        self._weights_sha256 = weights_sha256

    @classmethod
    def fit(cls, sources: Sequence[FitSource], directory: Path, **options) -> PCAEmbedder:
        settings = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
        value_type = sources[0].value_type
        genes = union_genes(sources)
        limit, seed = settings["max_fit_cells"], settings["seed"]
        mean, var, _ = gene_moments(sources, genes, limit, seed)
        panel = select_variable_genes(genes, mean, var, settings["n_top_genes"], value_type)
        centre, cov, n_cells = covariance(sources, panel, limit, seed)
        scale = np.sqrt(np.diag(cov))
        scale[scale == 0] = 1.0
        n_components = min(settings["n_components"], len(panel), max(1, n_cells - 1))
        components, variances = principal_axes(cov / np.outer(scale, scale), n_components)
        SavedFit(
            arrays={
                "genes": np.array(panel, dtype=str),
                "mean": centre,
                "scale": scale,
                "components": components,
                "explained_variance": variances,
            },
            settings={
                **settings,
                "n_components": n_components,
                "value_type": value_type,
                "fit_datasets": [s.dataset_id for s in sources],
                "fit_cells": n_cells,
            },
        ).save(directory)
        return cls.load(directory)

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", dtype: str = "float32") -> PCAEmbedder:
        return cls(SavedFit.load(checkpoint), file_sha256(checkpoint / ARRAYS))

    def gene_vocabulary(self) -> set[str]:
        return set(self.genes)

    def tokenize(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> np.ndarray:
        values = panel_matrix(transform(counts, self.value_type), genes, self.genes)
        return (values - self.mean) / self.scale

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return (batch @ self.components.T).astype(np.float32)

    def provenance(self) -> dict:
        return {"weights_sha256": self._weights_sha256, "settings": self.settings}

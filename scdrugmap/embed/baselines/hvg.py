"""Expression of the top highly variable genes: the no-model baseline.

If a foundation model cannot beat the normalised expression of a thousand
variable genes, its embedding has not earned its GPU hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

from scdrugmap.embed.baselines.expression import panel_matrix, transform
from scdrugmap.embed.baselines.fit import (
    FitSource,
    gene_moments,
    select_variable_genes,
    union_genes,
)
from scdrugmap.embed.baselines.saved_fit import ARRAYS, SavedFit, file_sha256

DEFAULTS = {"n_top_genes": 1000, "max_fit_cells": 100_000, "seed": 0}


class HVGEmbedder:
    name = "hvg"
    lora_targets: tuple[str, ...] = ()
    requires_counts = False

    def __init__(self, fit: SavedFit, weights_sha256: str) -> None:
        self.genes = [str(g) for g in fit.arrays["genes"]]
        self.settings = fit.settings
        self.value_type = fit.settings["value_type"]
        self.dim = len(self.genes)
        self._weights_sha256 = weights_sha256

    @classmethod
    def fit(cls, sources: Sequence[FitSource], directory: Path, **options) -> HVGEmbedder:
        settings = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
        value_type = sources[0].value_type
        genes = union_genes(sources)
        mean, var, n_cells = gene_moments(
            sources, genes, settings["max_fit_cells"], settings["seed"]
        )
        panel = select_variable_genes(genes, mean, var, settings["n_top_genes"], value_type)
        SavedFit(
            arrays={"genes": np.array(panel, dtype=str)},
            settings={
                **settings,
                "n_top_genes": len(panel),
                "value_type": value_type,
                "fit_datasets": [s.dataset_id for s in sources],
                "fit_cells": n_cells,
            },
        ).save(directory)
        return cls.load(directory)

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", dtype: str = "float32") -> HVGEmbedder:
        return cls(SavedFit.load(checkpoint), file_sha256(checkpoint / ARRAYS))

    def gene_vocabulary(self) -> set[str]:
        return set(self.genes)

    def tokenize(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> np.ndarray:
        return panel_matrix(transform(counts, self.value_type), genes, self.genes)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32, copy=False)

    def provenance(self) -> dict:
        return {"weights_sha256": self._weights_sha256, "settings": self.settings}

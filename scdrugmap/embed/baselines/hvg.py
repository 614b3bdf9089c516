"""Expression of the top highly variable genes: the no-model baseline.

If a foundation model cannot beat the normalised expression of a thousand
variable genes, its embedding has not earned its GPU hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy import sparse

from scdrugmap.embed.baselines.base import FittedBaseline
from scdrugmap.embed.baselines.fit import FitSource
from scdrugmap.embed.baselines.saved_fit import SavedFit


class HVGEmbedder(FittedBaseline):
    name = "hvg"
    defaults: ClassVar[dict] = {"n_top_genes": 1000, "max_fit_cells": 100_000, "seed": 0}

    @property
    def dim(self) -> int:
        return len(self.genes)

    @classmethod
    def fit(
        cls,
        sources: Sequence[FitSource],
        directory: Path,
        *,
        show_progress: bool = False,
        **options,
    ) -> HVGEmbedder:
        settings, panel = cls.variable_panel(sources, options, show_progress)
        SavedFit(arrays={"genes": np.array(panel, dtype=str)}, settings=settings).save(directory)
        return cls.load(directory)

    def tokenize(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> np.ndarray:
        return self.expression(counts, genes)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.astype(np.float32, copy=False)

"""What the two baselines share: a saved fit over a panel of genes.

Both are loaded from the fit made when their key was created; they differ
only in what they fit and in what they do with the panel's expression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy import sparse

from scdrugmap.embed.baselines.expression import panel_csr, panel_matrix, transform
from scdrugmap.embed.baselines.fit import (
    FitSource,
    fit_cell_count,
    gene_moments,
    select_variable_genes,
    union_genes,
)
from scdrugmap.embed.baselines.saved_fit import ARRAYS, SavedFit
from scdrugmap.progress import progress_bar
from scdrugmap.provenance import file_sha256


class FittedBaseline:
    name = "baseline"
    defaults: ClassVar[dict] = {}
    lora_targets: tuple[str, ...] = ()
    requires_counts = False
    # Coverage here is the share of a cell's genes in the variable-gene panel,
    # small by design; no threshold applies.
    min_coverage = 0.0
    # Reads of the fit cells: the gene variances, then whatever the baseline adds.
    n_passes: ClassVar[int] = 1

    def __init__(self, fit: SavedFit, weights_sha256: str) -> None:
        self.genes = [str(g) for g in fit.arrays["genes"]]
        self.settings = fit.settings
        self.value_type = fit.settings["value_type"]
        self._weights_sha256 = weights_sha256

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options):
        return cls(SavedFit.load(checkpoint), file_sha256(checkpoint / ARRAYS))

    @classmethod
    def variable_panel(
        cls, sources: Sequence[FitSource], options: dict, show_progress: bool = False
    ) -> tuple[dict, list[str]]:
        """Settings (defaults, options, provenance of the fit) and the chosen genes."""
        settings = {**cls.defaults, **{k: v for k, v in options.items() if v is not None}}
        value_type = sources[0].value_type
        genes = union_genes(sources)
        with cls.fit_pass(1, sources, settings, show_progress) as advance:
            mean, var, n_cells = gene_moments(
                sources, genes, settings["max_fit_cells"], settings["seed"], advance
            )
        panel = select_variable_genes(genes, mean, var, settings["n_top_genes"], value_type)
        settings.update(
            n_top_genes=len(panel),
            value_type=value_type,
            fit_datasets=[s.dataset_id for s in sources],
            fit_cells=n_cells,
        )
        return settings, panel

    @classmethod
    def fit_pass(
        cls, number: int, sources: Sequence[FitSource], settings: dict, shown: bool
    ) -> AbstractContextManager[Callable[..., None]]:
        """A bar over one read of the fit cells: on a large data set each takes minutes,
        before the embedding's own bar can start."""
        total = fit_cell_count(sources, settings["max_fit_cells"])
        several = f", pass {number}/{cls.n_passes}" if cls.n_passes > 1 else ""
        return progress_bar(shown, total, f"fitting {cls.name}{several}")

    def gene_vocabulary(self) -> set[str]:
        return set(self.genes)

    def expression(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> np.ndarray:
        """Normalised expression of the panel genes, dense (cells, panel)."""
        return panel_matrix(transform(counts, self.value_type), genes, self.genes)

    def sparse_expression(self, counts: sparse.csr_matrix, genes: Sequence[str]):
        """The same values as `expression`, kept as (cells, panel) CSR float32."""
        return panel_csr(transform(counts, self.value_type), genes, self.genes)

    def provenance(self) -> dict:
        return {"weights_sha256": self._weights_sha256, "settings": self.settings}

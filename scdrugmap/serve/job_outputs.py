"""What a finished prediction job leaves for the page and the API to read.

Per-cell calls with their map coordinates and per-sample summaries (CSV), and
the map and histogram figures (PNG and SVG), all in the job's own folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.report.cell_map import principal_map
from scdrugmap.report.prediction_figures import (
    plot_probability_histograms,
    plot_probability_map,
)
from scdrugmap.workflows.predict import Predictions

CELL_COLUMNS = (
    "barcode",
    "sample",
    "prob_sensitive",
    "prob_sensitive_raw",
    "call",
    "no_call_reason",
    "domain_score",
    "in_domain",
    "map_x",
    "map_y",
)
NUMBERS_THAT_MAY_BE_MISSING = (
    "prob_sensitive",
    "prob_sensitive_raw",
    "mean_prob_sensitive",
    "fraction_sensitive",
    "fraction_low",
    "fraction_high",
    "domain_score",
    "fraction_in_domain",
)
# The map (PCA of the embedding, coloured by probability) and the per-sample histograms.
FIGURES = ("map", "histogram")


@dataclass
class JobOutputs:
    """A finished job's folder; its tables are read from there when first asked for (a job
    restored after a restart) unless the job that wrote them still holds them."""

    folder: Path
    n_cells: int
    n_samples: int
    # How much of what the embedding reads the upload had (see Predictions).
    gene_coverage: float | None = None
    coverage_basis: str | None = None
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def table_path(self, name: str) -> Path:
        return self.folder / f"{name}.csv"

    def figure_path(self, figure: str, fmt: str) -> Path:
        return self.folder / f"{figure}.{fmt}"

    def _table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            # Barcodes and sample names stay text ("007" is not 7).
            self._tables[name] = pd.read_csv(
                self.table_path(name),
                dtype={"barcode": str, "sample": str, "no_call_reason": str, "domain_note": str},
                keep_default_na=False,
                # Empty text stays text; only an empty number is NaN (a cell with no call).
                na_values={c: [""] for c in NUMBERS_THAT_MAY_BE_MISSING},
                float_precision="round_trip",
            )
        return self._tables[name]

    @property
    def cells(self) -> pd.DataFrame:
        return self._table("cells")

    @property
    def samples(self) -> pd.DataFrame:
        return self._table("samples")


def write_outputs(result: Predictions, folder: Path) -> JobOutputs:
    folder.mkdir(parents=True, exist_ok=True)
    coordinates, explained = principal_map(result.features)
    cells = result.cells.assign(map_x=coordinates[:, 0], map_y=coordinates[:, 1])
    # float64 in memory and in the CSV, so a restored job reads back the very same numbers.
    numbers = {
        c: np.float64
        for c in ("prob_sensitive", "prob_sensitive_raw", "domain_score", "map_x", "map_y")
    }
    cells = cells.loc[:, list(CELL_COLUMNS)].astype(numbers).reset_index(drop=True)
    shares = {
        c: np.float64
        for c in (
            "mean_prob_sensitive",
            "fraction_sensitive",
            "fraction_low",
            "fraction_high",
            "fraction_in_domain",
        )
    }
    samples = result.samples.astype(shares).reset_index(drop=True)
    outputs = JobOutputs(
        folder,
        len(cells),
        len(samples),
        result.gene_coverage,
        result.coverage_basis,
        {"cells": cells, "samples": samples},
    )
    cells.to_csv(outputs.table_path("cells"), index=False)
    samples.to_csv(outputs.table_path("samples"), index=False)
    title = f"{result.dataset_id}: {len(cells)} cells, predictor {result.predictor}"
    plot_probability_map(cells, explained, outputs.figure_path("map", "png"), title)
    plot_probability_histograms(cells, outputs.figure_path("histogram", "png"))
    return outputs

"""What a finished prediction job leaves for the page and the API to read.

Per-cell calls with their map coordinates and per-sample summaries (CSV), and
the map and histogram figures (PNG and SVG), all in the job's own folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scdrugmap.predict.cell_map import principal_map
from scdrugmap.predict.predict import Predictions
from scdrugmap.report.prediction_figures import (
    plot_probability_histograms,
    plot_probability_map,
)

CELL_COLUMNS = ("barcode", "sample", "prob_sensitive", "call", "map_x", "map_y")
FIGURES = {
    "map": "2-D map of the cells (PCA of the embedding), coloured by probability of sensitivity",
    "histogram": "probability of sensitivity per sample",
}
FORMATS = ("png", "svg")


@dataclass
class JobOutputs:
    cells: pd.DataFrame
    samples: pd.DataFrame
    folder: Path

    def table_path(self, name: str) -> Path:
        return self.folder / f"{name}.csv"

    def figure_path(self, figure: str, fmt: str) -> Path:
        return self.folder / f"{figure}.{fmt}"


def write_outputs(store, result: Predictions, folder: Path) -> JobOutputs:
    folder.mkdir(parents=True, exist_ok=True)
    coordinates, explained = principal_map(store.load_embedding(result.embedding, result.cells))
    cells = result.cells.assign(map_x=coordinates[:, 0], map_y=coordinates[:, 1])
    cells = cells.loc[:, list(CELL_COLUMNS)].reset_index(drop=True)
    outputs = JobOutputs(cells, result.samples.reset_index(drop=True), folder)
    cells.to_csv(outputs.table_path("cells"), index=False)
    outputs.samples.to_csv(outputs.table_path("samples"), index=False)
    title = f"{result.dataset_id}: {len(cells)} cells, predictor {result.predictor}"
    plot_probability_map(cells, explained, outputs.figure_path("map", "png"), title)
    plot_probability_histograms(cells, outputs.figure_path("histogram", "png"))
    return outputs

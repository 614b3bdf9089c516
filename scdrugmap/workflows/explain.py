"""Explain: the genes behind a predictor's calls, ranked between the cells it called
resistant and those it called sensitive in one data set of the store.

The calls are the predictor's own: those a caller already holds (a finished prediction
job's), or the predictor applied to the data set's stored embedding, which is made first
(by the embedder exactly as the predictor was fitted on) when the store holds none.
Cells with no call are left out. The ranking is scanpy's Wilcoxon test on log1p CP10k,
streamed over the stored counts within a memory budget
(`scdrugmap.report.gene_ranking`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.embed.into_store import embed_into_store
from scdrugmap.embed.runner import LowCoverageError
from scdrugmap.errors import InputError, StoreError
from scdrugmap.predict.predict import (
    MIN_COVERAGE,
    MIN_PANEL_COVERAGE,
    NO_CALL,
    baseline_panel,
    cell_calls,
    embedder_as_trained,
)
from scdrugmap.predict.train import load_calibration, load_predictor, read_predictor_record
from scdrugmap.report.gene_figures import plot_volcano
from scdrugmap.report.gene_ranking import MIN_GROUP_CELLS, rank_genes
from scdrugmap.store.storage import Storage

GROUPS = ("resistant", "sensitive")
DEFAULT_MEMORY_MB = 1024
TOP_GENES = 15
TABLE_SUFFIX = ".csv"


@dataclass
class Explanation:
    """A data set's genes ranked between the predictor's resistant and sensitive calls.

    `genes` holds both groups' rows (gene, group, score, logfoldchange, pval, pval_adj,
    pct_resistant, pct_sensitive), each group's genes by descending score: the first
    rows of group resistant are the genes most up in cells called resistant."""

    predictor: str
    dataset_id: str
    genes: pd.DataFrame
    group_sizes: dict[str, int]
    n_no_call: int
    calls_from: str
    n_gene_blocks: int
    n_cell_chunks: int

    def top(self, group: str, n: int = TOP_GENES) -> pd.DataFrame:
        """The `n` genes most up in cells called `group`."""
        return self.genes[self.genes["group"] == group].head(n).reset_index(drop=True)

    def summary(self) -> dict:
        return {
            "predictor": self.predictor,
            "dataset_id": self.dataset_id,
            "group_sizes": self.group_sizes,
            "n_no_call": self.n_no_call,
            "calls_from": self.calls_from,
            "n_genes": int((self.genes["group"] == GROUPS[0]).sum()),
            "n_gene_blocks": self.n_gene_blocks,
            "n_cell_chunks": self.n_cell_chunks,
        }


def _has_embedding(store: Storage, key: str, dataset_id: str) -> bool:
    frame = store.embeddings()
    if frame.empty:
        return False
    row = frame[(frame["key"] == key) & (frame["dataset_id"] == dataset_id)]
    return bool(len(row)) and bool(row["complete"].iloc[0])


def _embed_for(store: Storage, record: dict, dataset_id: str, device: str, show_progress: bool):
    """Embed the data set as the predictor's embedding was made, refusing one that shares
    too few genes with it (nothing is written then)."""
    key = record["embedding"]["key"]
    embedder = embedder_as_trained(store, record, None, device, {})
    panel = baseline_panel(embedder)
    if panel is not None:
        present = set(store.reader(dataset_id).gene_ids)
        share = sum(g in present for g in panel) / max(len(panel), 1)
        if share < MIN_PANEL_COVERAGE:
            raise InputError(
                f"data set {dataset_id!r} has only {share:.0%} of the {len(panel)} genes of the "
                f"{embedder.name} panel predictor {record['name']!r} reads; its calls would not "
                "be trustworthy, so no genes are ranked"
            )
    try:
        embed_into_store(
            store,
            embedder,
            key,
            [dataset_id],
            min_coverage=0.0 if panel is not None else MIN_COVERAGE,
            show_progress=show_progress,
        )
    except LowCoverageError as error:
        raise InputError(
            f"data set {dataset_id!r}: {error.finding}; calls from so few known genes would "
            "not be trustworthy, so no genes are ranked"
        ) from error


def predictor_calls(
    store: Storage,
    predictor: str,
    dataset_id: str,
    *,
    device: str = "auto",
    show_progress: bool = False,
) -> tuple[pd.DataFrame, str]:
    """Every cell's call by the predictor (barcode, sample, prob_sensitive, call, in store
    order) and where it came from: the stored embedding, or one made now."""
    record, model = load_predictor(store, predictor)
    key = record["embedding"]["key"]
    came_from = f"the stored {key!r} embedding of {dataset_id}"
    if not _has_embedding(store, key, dataset_id):
        _embed_for(store, record, dataset_id, device, show_progress)
        came_from = f"{dataset_id} embedded now as {key!r}, as the predictor was fitted"
    cells = store.cells(
        f"dataset_id = '{dataset_id}'",
        labelled=False,
        columns=("dataset_id", "cell_index", "barcode", "sample"),
    )
    raw = model.predict_proba(store.load_embedding(key, cells))[:, 1]
    # Called as `predict` calls: from the calibrated probability, when the predictor has one.
    calibrator = load_calibration(store, predictor)
    calibrated = raw if calibrator is None else calibrator(raw)
    return cell_calls(store, key, cells, raw, calibrated), came_from


def _given_calls(store: Storage, dataset_id: str, calls: pd.DataFrame) -> pd.DataFrame:
    """Calls a caller holds, checked to be one per cell of the data set, in its order."""
    barcodes = store.cells(f"dataset_id = '{dataset_id}'", labelled=False, columns=("barcode",))
    given = calls["barcode"].astype(str).to_numpy()
    if len(given) != len(barcodes) or (given != barcodes["barcode"].to_numpy()).any():
        raise StoreError(
            f"the calls given are not those of data set {dataset_id!r} ({len(given)} calls, "
            f"{len(barcodes)} cells, or other barcodes); predict it again"
        )
    return calls


def _membership(calls: pd.DataFrame, predictor: str, dataset_id: str) -> np.ndarray:
    call = calls["call"].to_numpy()
    membership = np.full(len(call), -1, dtype=np.int8)
    for g, name in enumerate(GROUPS):
        membership[call == name] = g
    counts = {name: int((membership == g).sum()) for g, name in enumerate(GROUPS)}
    short = [name for name, n in counts.items() if n < MIN_GROUP_CELLS]
    if short:
        held = ", ".join(f"{n} {name}" for name, n in counts.items())
        raise InputError(
            f"predictor {predictor!r} called {held} and {int((call == NO_CALL).sum())} no call "
            f"of the {len(call)} cells of {dataset_id}: ranking genes between resistant and "
            f"sensitive cells needs at least {MIN_GROUP_CELLS} of each, and there are too few "
            f"{' and '.join(short)} ones"
        )
    return membership


def explain(
    store: Storage,
    predictor: str,
    dataset_id: str,
    *,
    calls: pd.DataFrame | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    device: str = "auto",
    show_progress: bool = False,
) -> Explanation:
    """Rank the data set's genes between the cells the predictor called resistant and those
    it called sensitive. `calls` (barcode and call per cell, in store order) are used as
    given, for calls kept elsewhere; else the predictor calls the cells now."""
    store.require()
    info = store.dataset(dataset_id)
    if info["value_type"] != "counts":
        raise InputError(
            f"data set {dataset_id!r} holds {info['value_type']} values; genes are ranked on "
            "log1p counts per 10,000, so explain needs a data set of raw counts"
        )
    if memory_mb <= 0:
        raise InputError(f"--memory-mb must be positive, not {memory_mb}")
    if calls is None:
        calls, came_from = predictor_calls(
            store, predictor, dataset_id, device=device, show_progress=show_progress
        )
    else:
        read_predictor_record(store, predictor)
        calls, came_from = _given_calls(store, dataset_id, calls), "the calls given"
    membership = _membership(calls, predictor, dataset_id)
    ranking = rank_genes(
        store.reader(dataset_id),
        membership,
        GROUPS,
        memory_bytes=int(memory_mb * (1 << 20)),
        show_progress=show_progress,
    )
    return Explanation(
        predictor,
        dataset_id,
        ranking.table,
        ranking.group_sizes,
        int((membership < 0).sum()),
        came_from,
        ranking.n_gene_blocks,
        ranking.n_cell_chunks,
    )


def figure_path_for(table: Path) -> Path:
    """Where the volcano plot goes beside a table: genes.csv -> genes.volcano.png (.svg)."""
    return table.with_name(f"{table.stem}.volcano.png")


def write_explanation(
    result: Explanation, out: str | os.PathLike, figure: str | os.PathLike | None = None
) -> list[Path]:
    """The table as CSV and the volcano plot as PNG and SVG (default: beside the table)."""
    out = Path(out)
    if out.suffix != TABLE_SUFFIX:
        raise InputError(f"--out {out}: write the gene table as {TABLE_SUFFIX}")
    figure = Path(figure) if figure is not None else figure_path_for(out)
    if figure.suffix not in (".png", ".svg"):
        raise InputError(f"--figure {figure}: name a .png (an .svg is written beside it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.genes.to_csv(out, index=False)
    sizes = result.group_sizes
    title = (
        f"{result.dataset_id}, predictor {result.predictor}: {sizes[GROUPS[0]]} resistant vs "
        f"{sizes[GROUPS[1]]} sensitive cells"
    )
    png = plot_volcano(result.genes, GROUPS, figure.with_suffix(".png"), title)
    return [out, png, png.with_suffix(".svg")]

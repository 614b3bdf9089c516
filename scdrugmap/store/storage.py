"""`Storage`: one store directory, kept and read; it runs no operation of its own.

The catalog (DuckDB), the data sets' and embeddings' zarr arrays and the baselines'
fits live here. Everything that composes them into an operation a user names (ingest,
embed, evaluate, predict ...) lives in `scdrugmap.workflows`, which builds on this
class, so the lowest layer never calls the highest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scdrugmap.errors import InputError, StoreError
from scdrugmap.store.catalog import connect
from scdrugmap.store.location import CATALOG_NAME, default_store_path
from scdrugmap.store.sql import SqlLimits, check_read_only, run_query, user_query

if TYPE_CHECKING:
    from scdrugmap.store.dataset_zarr import DatasetReader
    from scdrugmap.store.embedding_array import EmbeddingArray

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_key(key: str, what: str = "embedding key") -> str:
    if not KEY_PATTERN.match(key):
        raise InputError(
            f"{what} {key!r} is not allowed; use letters, digits, '_', '-' or '.' "
            "(at most 64, starting with a letter or digit)"
        )
    return key


class Storage:
    """A directory holding `catalog.duckdb`, `datasets/*.zarr`, `embeddings/`, `fits/`."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_NAME

    def exists(self) -> bool:
        return self.catalog_path.exists()

    def require(self) -> None:
        if not self.exists():
            raise StoreError(
                f"{self.path}: no scdrugmap store here; run `scdrugmap --store {self.path} "
                "ingest ...` first, or point --store / $SCDRUGMAP_STORE at one"
            )

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        """A trusted internal query (parameters bound), on a read-only connection."""
        self.require()
        with connect(self.catalog_path) as con:
            return con.execute(sql, params or []).df()

    # data sets ---------------------------------------------------------------

    def add_prepared(self, prepared, *, replace: bool = False) -> dict:
        """Add a prepared data set; the row says which staging folders of killed ingests
        were removed on the way (`removed_staging`, paths relative to the store)."""
        from scdrugmap.store.ingest import add_dataset

        removed = add_dataset(self.path, prepared, replace=replace)
        row = self.dataset(prepared.dataset_id)
        return {**row, "removed_staging": [str(p.relative_to(self.path)) for p in removed]}

    def datasets(self) -> pd.DataFrame:
        if not self.exists():
            return pd.DataFrame()
        return self.query("SELECT * FROM datasets ORDER BY dataset_id")

    def dataset_ids(self) -> list[str]:
        frame = self.datasets()
        return [] if frame.empty else frame["dataset_id"].tolist()

    def dataset(self, dataset_id: str) -> dict:
        frame = self.query("SELECT * FROM datasets WHERE dataset_id = ?", [dataset_id])
        if frame.empty:
            known = ", ".join(self.dataset_ids()) or "none"
            raise InputError(f"no data set {dataset_id!r} in {self.path} (data sets: {known})")
        return frame.iloc[0].to_dict()

    def reader(self, dataset_id: str) -> DatasetReader:
        from scdrugmap.store.dataset_zarr import DatasetReader

        self.dataset(dataset_id)
        return DatasetReader(self.path / "datasets" / f"{dataset_id}.zarr")

    def resolve_datasets(self, datasets: str | Sequence[str] | None) -> list[str]:
        """'all', None, a comma-separated string or a list, checked against the store."""
        self.require()
        known = self.dataset_ids()
        if datasets is None or datasets == "all":
            chosen = known
        elif isinstance(datasets, str):
            chosen = [d.strip() for d in datasets.split(",") if d.strip()]
        else:
            chosen = list(datasets)
        missing = [d for d in chosen if d not in known]
        if missing:
            raise InputError(
                f"unknown data set(s): {', '.join(missing)}; the store holds: "
                f"{', '.join(known) or 'none'}"
            )
        if not chosen:
            raise InputError(f"{self.path}: no data sets to work on; ingest one first")
        return chosen

    # embeddings --------------------------------------------------------------

    def embedding_path(self, key: str, dataset_id: str) -> Path:
        return self.path / "embeddings" / key / f"{dataset_id}.zarr"

    def fit_path(self, key: str) -> Path:
        return self.path / "fits" / key

    def drop_dataset(self, dataset_id: str) -> None:
        """Remove a data set, its cells and every embedding of it (catalog rows and arrays)."""
        self.dataset(dataset_id)
        with connect(self.catalog_path, write=True) as con:
            for table in ("cells", "embeddings", "failures", "datasets"):
                con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [dataset_id])
        for array in (self.path / "embeddings").glob(f"*/{dataset_id}.zarr"):
            shutil.rmtree(array, ignore_errors=True)
        shutil.rmtree(self.path / "datasets" / f"{dataset_id}.zarr", ignore_errors=True)

    def drop_embedding(self, key: str) -> None:
        if self.exists():
            with connect(self.catalog_path, write=True) as con:
                con.execute("DELETE FROM embeddings WHERE key = ?", [key])
                con.execute("DELETE FROM failures WHERE key = ?", [key])
        shutil.rmtree(self.path / "embeddings" / key, ignore_errors=True)
        shutil.rmtree(self.fit_path(key), ignore_errors=True)

    def embeddings(self) -> pd.DataFrame:
        """Stored embeddings with provenance; chunks done read live from the arrays.

        Complete means every chunk written *and* the completion recorded (coverage and
        failures in the catalog): a run killed after its last chunk is not complete
        until a rerun records it."""
        if not self.exists():
            return pd.DataFrame()
        from scdrugmap.store.embedding_array import EmbeddingArray

        frame = self.query("SELECT * FROM embeddings ORDER BY key, dataset_id")
        if frame.empty:
            return frame
        done = []
        for key, dataset_id in zip(frame["key"], frame["dataset_id"]):
            path = self.embedding_path(key, dataset_id)
            done.append(int(EmbeddingArray(path).done_chunks().sum()) if path.exists() else 0)
        frame["chunks_done"] = done
        recorded = frame["completed_at"].notna() & frame["complete"].astype(bool)
        frame["complete"] = (frame["chunks_done"] == frame["n_chunks"]) & recorded
        return frame

    def embedding_array(self, key: str, dataset_id: str) -> EmbeddingArray:
        from scdrugmap.store.embedding_array import EmbeddingArray

        path = self.embedding_path(key, dataset_id)
        if not path.exists():
            held = self.query(
                "SELECT DISTINCT dataset_id FROM embeddings WHERE key = ? ORDER BY dataset_id",
                [key],
            )["dataset_id"].tolist()
            raise StoreError(
                f"no embedding {key!r} for data set {dataset_id!r}"
                + (f" ({key!r} holds: {', '.join(held)})" if held else "")
                + "; narrow --where to data sets that hold it, or embed "
                f"{dataset_id} under a key of its own (`scdrugmap embed --model MODEL --key "
                f"{key}-{dataset_id} --datasets {dataset_id}`)"
            )
        array = EmbeddingArray(path)
        done = array.done_chunks()
        if not done.all():
            raise StoreError(
                f"embedding {key!r} of {dataset_id!r} is incomplete ({int(done.sum())}/"
                f"{array.n_chunks} chunks); rerun embed to finish it"
            )
        return array

    def load_embedding(self, key: str, cells: pd.DataFrame) -> np.ndarray:
        """Embedding rows for `cells` (columns dataset_id, cell_index), in their order.

        Cells in store order (as `cells()` returns them) are read straight
        into the result; any other order costs one extra gather.
        """
        dataset_ids = cells["dataset_id"].to_numpy()
        indices = cells["cell_index"].to_numpy(dtype=np.int64)
        out = None
        starts = np.flatnonzero(np.r_[True, dataset_ids[1:] != dataset_ids[:-1]])
        bounds = np.r_[starts, len(cells)]
        for lo, hi in pairwise(bounds):
            array = self.embedding_array(key, str(dataset_ids[lo]))
            if out is None:
                out = np.empty((len(cells), array.shape[1]), dtype=np.float32)
            rows = indices[lo:hi]
            if np.all(rows[1:] > rows[:-1]):
                array.read_rows(rows, out[lo:hi])
            else:
                order = np.argsort(rows, kind="stable")
                out[lo + order] = array.read_rows(rows[order])
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    # selections and SQL -------------------------------------------------------

    def cells(
        self,
        where: str | None = None,
        *,
        labelled: bool = True,
        columns: Sequence[str] = ("dataset_id", "cell_index", "barcode", "sample", "label"),
    ) -> pd.DataFrame:
        """Cells matching a SQL condition on `cell_meta`, in store order.

        Ask only for the columns you need: strings cost far more to fetch
        than the embedding rows they select.
        """
        self.require()
        conditions = ["label <> 'unknown'"] if labelled else []
        if where:
            check_read_only(f"SELECT * FROM cell_meta WHERE {where}")
            conditions.append(f"({where})")
        clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        return run_query(
            self.catalog_path,
            f"SELECT {', '.join(columns)} FROM cell_meta {clause} ORDER BY dataset_id, cell_index",
        )

    def sql(
        self,
        query: str,
        limit: int | None = None,
        seconds: float | None = None,
        *,
        limits: SqlLimits | None = None,
    ) -> pd.DataFrame:
        """Run a read-only query on a snapshot of the catalog (stopped after `seconds`, or
        within `limits`); statements that write are refused, and no writer waits for it."""
        self.require()
        chosen = limits or SqlLimits(seconds=seconds, max_bytes=None)
        return user_query(self.catalog_path, query, limit, chosen)

    # runs ---------------------------------------------------------------------

    def embedding_model(self, key: str) -> tuple[str, dict] | None:
        """The model of the embedding `key` and the settings it was made with (None when no
        such embedding is stored); every data set under a key shares both."""
        with connect(self.catalog_path) as con:
            row = con.execute(
                "SELECT model, settings FROM embeddings WHERE key = ? LIMIT 1", [key]
            ).fetchone()
        return (str(row[0]), json.loads(row[1])) if row else None

    def embedding_fit_datasets(self, key: str) -> list[str] | None:
        """The data sets a fitted baseline (pca, hvg) under `key` learned from; None for
        checkpoint models, which learned nothing from this store. A run records them: a
        held-out data set the fit saw is not fully held out."""
        made = self.embedding_model(key)
        fitted = made[1].get("fit_datasets") if made else None
        return [str(d) for d in fitted] if fitted else None

    def adapter_trained_cells(self, key: str) -> pd.DataFrame | None:
        """The cells a fine-tuned embedding's adapter was trained on (None for other keys):
        evaluation leaves them out, so they are never scored."""
        made = self.embedding_model(key)
        adapter = made[1].get("adapter") if made else None
        if not adapter:
            return None
        path = self.path / adapter["trained_cells"]
        if not path.is_file():
            raise StoreError(
                f"embedding {key!r} was made with a fine-tuned adapter whose list of trained "
                f"cells ({path}) is gone; it cannot be evaluated safely"
            )
        trained = np.load(path)
        return pd.DataFrame(
            {"dataset_id": trained["dataset_id"].astype(str), "cell_index": trained["cell_index"]}
        )

    def results(self, *, latest: bool = True) -> pd.DataFrame:
        """Per-fold metrics in long form, with each run's embedding, classifier and split.

        `latest` keeps only the newest run of each (embedding, classifier,
        split, selection, control), so a rerun replaces rather than doubles a row
        and a shuffled control never replaces its real run.
        """
        if not self.exists():
            return pd.DataFrame()
        newest = (
            "WHERE r.run_id IN (SELECT arg_max(run_id, created_at) FROM runs "
            "GROUP BY embedding, classifier, split, coalesce(selection, ''), "
            "coalesce(control, ''))"
            if latest
            else ""
        )
        # Runs from before `grouping` was kept: cell-level ones are known to be cells.
        return self.query(
            "SELECT r.*, u.embedding, u.classifier, u.split, u.selection, u.cell_level, "
            "coalesce(u.grouping, CASE WHEN u.cell_level THEN 'cell' END) AS grouping, "
            "u.control, u.fit_datasets, "
            "u.note, u.created_at FROM results r JOIN runs u USING (run_id) "
            f"{newest} "
            "ORDER BY u.embedding, u.classifier, u.split, r.fold, r.scope, r.dataset_id, r.metric"
        )

    def runs(self) -> pd.DataFrame:
        if not self.exists():
            return pd.DataFrame()
        return self.query("SELECT * FROM runs ORDER BY created_at")

    def held_out_predictions(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """run_id, label and probability of sensitivity of the labelled held-out cells of
        runs (raw, and `prob_calibrated` where the store has it): what ROC,
        precision-recall and reliability curves are drawn from."""
        return self.query(
            "SELECT * EXCLUDE (fold, dataset_id, cell_index, predicted) FROM predictions "
            "WHERE run_id IN (SELECT unnest(?)) AND label IS NOT NULL",
            [list(run_ids)],
        )

"""`Store`: the Python API over one store directory; the CLI only wraps it.

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions

store = Store("my-store")
store.ingest(["control.txt.gz", "erlotinib.txt.gz"],
             IngestOptions("pc9", samples=["control", "erlotinib"],
                           labels=["sensitive", "resistant"], drug="erlotinib"))
store.embed("pca")
run = store.evaluate("pca", "lightgbm", "pooled")
store.results()
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
from scdrugmap.store.sql import check_read_only, run_query

if TYPE_CHECKING:
    from scdrugmap.store.dataset_zarr import DatasetReader
    from scdrugmap.store.embedding_array import EmbeddingArray

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


EXECUTORS = ("local", "ray")
# A data set's descriptions that an exported AnnData carries on every cell, for scanpy
# users who concatenate several exports.
DATASET_METADATA = ("drug", "cancer_type", "tissue", "therapy", "regimen", "species")


def check_key(key: str, what: str = "embedding key") -> str:
    if not KEY_PATTERN.match(key):
        raise InputError(
            f"{what} {key!r} is not allowed; use letters, digits, '_', '-' or '.' "
            "(at most 64, starting with a letter or digit)"
        )
    return key


class Store:
    """A directory holding `catalog.duckdb`, `datasets/*.zarr`, `embeddings/`, `fits/`."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_NAME

    def exists(self) -> bool:
        return self.catalog_path.exists()

    def _require(self) -> None:
        if not self.exists():
            raise StoreError(
                f"{self.path}: no scdrugmap store here; run `scdrugmap --store {self.path} "
                "ingest ...` first, or point --store / $SCDRUGMAP_STORE at one"
            )

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        """A trusted internal query (parameters bound), on a read-only connection."""
        self._require()
        with connect(self.catalog_path) as con:
            return con.execute(sql, params or []).df()

    # data sets ---------------------------------------------------------------

    def ingest(self, files: Sequence[str | os.PathLike], options, *, replace: bool = False) -> dict:
        """Read, validate and add one data set built from `files` (all or nothing)."""
        from scdrugmap.data.prepare import prepare_dataset
        from scdrugmap.store.ingest import add_dataset

        prepared = prepare_dataset([Path(f) for f in files], options)
        add_dataset(self.path, prepared, replace=replace)
        return self.dataset(prepared.dataset_id)

    def add_prepared(self, prepared, *, replace: bool = False) -> dict:
        from scdrugmap.store.ingest import add_dataset

        add_dataset(self.path, prepared, replace=replace)
        return self.dataset(prepared.dataset_id)

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
        self._require()
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

    def embed(
        self,
        model: str,
        datasets: str | Sequence[str] | None = "all",
        *,
        key: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        fit_on: str | Sequence[str] | None = None,
        chunk_size: int = 10_000,
        dtype: str = "float32",
        replace: bool = False,
        show_progress: bool = False,
        device: str = "auto",
        min_coverage: float | None = None,
        executor: str = "local",
        address: str | None = None,
        workers: int | None = None,
        **model_options,
    ):
        """Embed data sets with a model into `embeddings/<key>/`; resumes unfinished runs.

        `executor="ray"` spreads the chunks over Ray actors (`address`: a cluster to
        join; `workers`: how many, default one per GPU or CPU)."""
        from scdrugmap.embed.build import build_embedder, model_recipe

        if executor not in EXECUTORS:
            raise InputError(f"unknown --executor {executor!r}; choose {' or '.join(EXECUTORS)}")
        key = check_key(key or model)
        dataset_ids = self.resolve_datasets(datasets)
        if replace:
            self.drop_embedding(key)
        # With Ray the driver's model only checks the data sets (vocabulary, settings);
        # the actors embed, each on its own device, so the driver keeps it on the CPU.
        embedder = build_embedder(
            self,
            model,
            key,
            dataset_ids,
            checkpoint,
            fit_on,
            "cpu" if executor == "ray" else device,
            model_options,
            show_progress=show_progress,
        )
        recipe = model_recipe(self, model, key, embedder, device) if executor == "ray" else None
        return self.embed_with(
            embedder,
            key,
            dataset_ids,
            chunk_size=chunk_size,
            dtype=dtype,
            min_coverage=min_coverage,
            show_progress=show_progress,
            recipe=recipe,
            address=address,
            workers=workers,
        )

    def embed_with(
        self,
        embedder,
        key: str,
        dataset_ids: Sequence[str],
        *,
        chunk_size: int = 10_000,
        dtype: str = "float32",
        min_coverage: float | None = None,
        show_progress: bool = False,
        recipe=None,
        address: str | None = None,
        workers: int | None = None,
    ):
        """Embed data sets with an embedder already built (a fine-tuned one, say); with a
        `recipe` (how workers rebuild it), on Ray actors."""
        from scdrugmap.embed.runner import EmbedTarget, plan_embedding, run_embedding

        key = check_key(key)
        info = {d: self.dataset(d) for d in dataset_ids}
        targets = [
            EmbedTarget(
                d,
                self.reader(d),
                info[d]["value_type"],
                self.embedding_path(key, d),
                info[d]["gene_id_type"],
            )
            for d in dataset_ids
        ]
        self.embedding_path(key, dataset_ids[0]).parent.mkdir(parents=True, exist_ok=True)
        plan = plan_embedding(
            embedder,
            key,
            targets,
            self.catalog_path,
            chunk_size=chunk_size,
            dtype=dtype,
            min_coverage=min_coverage,
        )
        if recipe is None:
            return run_embedding(plan, embedder, self.catalog_path, show_progress)
        from scdrugmap.embed.ray_executor import run_embedding_ray

        return run_embedding_ray(
            plan,
            recipe,
            self.catalog_path,
            address=address,
            workers=workers,
            show_progress=show_progress,
        )

    def drop_dataset(self, dataset_id: str) -> None:
        """Remove a data set, its cells and every embedding of it (catalog rows and arrays)."""
        self.dataset(dataset_id)
        with connect(self.catalog_path, write=True) as con:
            for table in ("cells", "embeddings", "failures", "datasets"):
                con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [dataset_id])
        for array in (self.path / "embeddings").glob(f"*/{dataset_id}.zarr"):
            shutil.rmtree(array, ignore_errors=True)
        shutil.rmtree(self.path / "datasets" / f"{dataset_id}.zarr", ignore_errors=True)

    def predict(self, predictor: str, files, **options):
        """Per-cell calls for new cells (see `scdrugmap.predict.predict.predict_files`)."""
        from scdrugmap.predict.predict import predict_files

        self._require()
        return predict_files(self, predictor, list(files), **options)

    def drop_embedding(self, key: str) -> None:
        if self.exists():
            with connect(self.catalog_path, write=True) as con:
                con.execute("DELETE FROM embeddings WHERE key = ?", [key])
                con.execute("DELETE FROM failures WHERE key = ?", [key])
        shutil.rmtree(self.path / "embeddings" / key, ignore_errors=True)
        shutil.rmtree(self.fit_path(key), ignore_errors=True)

    def embeddings(self) -> pd.DataFrame:
        """Stored embeddings with provenance; completeness read live from the arrays."""
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
        frame["complete"] = frame["chunks_done"] == frame["n_chunks"]
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
        self._require()
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
        self, query: str, limit: int | None = None, seconds: float | None = None
    ) -> pd.DataFrame:
        """Run a read-only query (stopped after `seconds`); statements that write are refused."""
        self._require()
        return run_query(self.catalog_path, query, limit, seconds)

    # evaluation ---------------------------------------------------------------

    def evaluate(
        self,
        embedding: str,
        classifier: str,
        split: str,
        *,
        where: str | None = None,
        n_folds: int = 5,
        shots: int = 5,
        seed: int = 0,
        show_progress: bool = False,
    ):
        """Cross-validate a classifier on a stored embedding; results go to the catalog."""
        from scdrugmap.classify.evaluate import evaluate

        self._require()
        return evaluate(
            self,
            embedding,
            classifier,
            split,
            where=where,
            n_folds=n_folds,
            shots=shots,
            seed=seed,
            show_progress=show_progress,
        )

    def adapter_trained_cells(self, key: str) -> pd.DataFrame | None:
        """The cells a fine-tuned embedding's adapter was trained on (None for other keys):
        evaluation leaves them out, so they are never scored."""
        with connect(self.catalog_path) as con:
            row = con.execute(
                "SELECT settings FROM embeddings WHERE key = ? LIMIT 1", [key]
            ).fetchone()
        adapter = json.loads(row[0]).get("adapter") if row else None
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

    def train_predictor(
        self,
        embedding: str,
        classifier: str,
        name: str,
        *,
        where: str | None = None,
        seed: int = 0,
        replace: bool = False,
    ) -> dict:
        """Fit a classifier on all selected cells of an embedding and keep it as a predictor."""
        from scdrugmap.predict.train import train_predictor

        self._require()
        return train_predictor(
            self, embedding, classifier, name, where=where, seed=seed, replace=replace
        )

    def finetune(self, request, show_progress: bool = False):
        """LoRA fine-tuning of a foundation model per fold (a `FinetuneRequest`); its
        held-out scores go to the catalog beside frozen-embedding runs."""
        from scdrugmap.finetune.run import finetune

        self._require()
        return finetune(self, request, show_progress=show_progress)

    def results(self, *, latest: bool = True) -> pd.DataFrame:
        """Per-fold metrics in long form, with each run's embedding, classifier and split.

        `latest` keeps only the newest run of each (embedding, classifier,
        split, selection), so a rerun replaces rather than doubles a row.
        """
        if not self.exists():
            return pd.DataFrame()
        newest = (
            "WHERE r.run_id IN (SELECT arg_max(run_id, created_at) FROM runs "
            "GROUP BY embedding, classifier, split, coalesce(selection, ''))"
            if latest
            else ""
        )
        return self.query(
            "SELECT r.*, u.embedding, u.classifier, u.split, u.selection, u.cell_level, "
            "u.note, u.created_at FROM results r JOIN runs u USING (run_id) "
            f"{newest} "
            "ORDER BY u.embedding, u.classifier, u.split, r.fold, r.scope, r.dataset_id, r.metric"
        )

    def runs(self) -> pd.DataFrame:
        if not self.exists():
            return pd.DataFrame()
        return self.query("SELECT * FROM runs ORDER BY created_at")

    # output -------------------------------------------------------------------

    def export(self, embedding: str, dataset_id: str, out: str | os.PathLike) -> Path:
        """Write an .h5ad: counts in X, cell metadata in obs, the embedding in obsm."""
        import anndata as ad

        reader = self.reader(dataset_id)
        array = self.embedding_array(embedding, dataset_id)
        obs = reader.read_obs()
        catalog_cells = self.query(
            "SELECT barcode, sample, label, n_counts, n_genes FROM cells "
            "WHERE dataset_id = ? ORDER BY cell_index",
            [dataset_id],
        )
        # Unnamed, so obs.reset_index() gives an `index` column beside `barcode`.
        obs.index = pd.Index(catalog_cells["barcode"].astype(str).to_numpy(), name=None)
        obs["dataset_id"] = dataset_id
        metadata = self.dataset(dataset_id)
        for column in DATASET_METADATA:
            if metadata.get(column) is not None and metadata[column] == metadata[column]:
                obs[column] = pd.Categorical([metadata[column]] * len(obs))
        obs[f"coverage_{embedding}"] = array.read_coverage()
        adata = ad.AnnData(
            X=reader.read_rows(0, reader.n_cells),
            obs=obs,
            var=reader.var,
            obsm={f"X_{embedding}": array.read_all().astype(np.float32)},
            uns={"scdrugmap": {"embedding": embedding, **_plain(array.attrs)}},
        )
        out = Path(out)
        if out.suffix != ".h5ad":
            raise InputError(f"{out}: export writes .h5ad files; give a path ending in .h5ad")
        out.parent.mkdir(parents=True, exist_ok=True)
        adata.write_h5ad(out)
        return out

    def report(self, out_dir: str | os.PathLike) -> Path:
        """An HTML report (with figures) of the latest results."""
        from scdrugmap.report.html import write_report

        results = self.results()
        if results.empty:
            raise StoreError(f"{self.path}: no results yet; run `scdrugmap evaluate` first")
        run_ids = set(results["run_id"])
        notes = sorted(
            {
                f"{r.embedding} × {r.classifier} × {r.split}: {r.note}"
                for r in self.runs().itertuples()
                if r.run_id in run_ids and isinstance(r.note, str) and r.note
            }
        )
        predictions = self.held_out_predictions(sorted(run_ids))
        return write_report(results, Path(out_dir), notes=notes, predictions=predictions)

    def held_out_predictions(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """run_id, label and probability of sensitivity of the labelled held-out cells of
        runs: what ROC and precision-recall curves are drawn from."""
        return self.query(
            "SELECT run_id, label, prob_sensitive FROM predictions "
            "WHERE run_id IN (SELECT unnest(?)) AND label IS NOT NULL",
            [list(run_ids)],
        )


def _plain(attrs: dict) -> dict:
    """Provenance attributes as strings and numbers that h5ad can hold."""
    return {k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in attrs.items()}

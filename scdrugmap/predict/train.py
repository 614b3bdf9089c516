"""Predictors: a classifier fitted on all selected cells of one embedding, kept in the store.

A predictor carries what a reader needs to trust it and what `predict` needs
to use it: the embedding key with its provenance (model, weights sha256,
settings hash), the cells it was fitted on, the metrics of the matching
cross-validated run when there is one, and package versions. It is written
to a staging folder and moved into place whole, so a predictor is either
complete or absent.

Beside the classifier it keeps a calibrator (classify/calibration.py), chosen and fitted
by cross-validation on the same training cells, and in its record how that went: the
method, how the inner folds held cells out, and the reliability bins, ECE and Brier
score of the training cells' out-of-fold probabilities before and after calibration, so
a page can draw its reliability diagram without fitting anything again.

It also keeps the index of its applicability domain (predict/domain.py): where its
training cells lie in the embedding space, so a new cell far from all of them is flagged.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.classify.calibration import Calibrator, fit_calibration
from scdrugmap.classify.classifiers import make_classifier
from scdrugmap.classify.evaluate import _copy_hashes
from scdrugmap.classify.selection import choose_for_embedding, failed_cells, leave_out
from scdrugmap.errors import InputError, StoreError
from scdrugmap.predict.domain import (
    QUANTILE,
    DomainIndex,
    build_domain,
    check_quantile,
    load_domain,
)
from scdrugmap.predict.saved import (
    load_calibrator,
    load_classifier,
    save_calibrator,
    save_classifier,
)
from scdrugmap.provenance import canonical_json, package_versions, utc_now
from scdrugmap.store.catalog import connect

RECORD = "predictor.json"
CELLS = "cells.npz"


def predictor_path(store, name: str) -> Path:
    return store.path / "predictors" / name


def _embedding_provenance(store, key: str) -> dict:
    rows = store.query(
        "SELECT dataset_id, model, weights_sha256, settings_hash, settings FROM embeddings "
        "WHERE key = ?",
        [key],
    )
    if rows.empty:
        raise StoreError(f"no embedding {key!r}; embed the data sets first")
    first = rows.iloc[0]
    return {
        "key": key,
        "model": first["model"],
        "weights_sha256": first["weights_sha256"],
        "settings_hash": first["settings_hash"],
        "settings": json.loads(first["settings"]),
        "dataset_ids": sorted(rows["dataset_id"].tolist()),
        "load_recipe": store.embedding_array(key, first["dataset_id"]).attrs.get("load_recipe"),
    }


def _cross_validated(store, embedding: str, classifier: str, where: str | None) -> dict | None:
    """Mean of each pooled metric over folds of the newest matching evaluation run (never
    a shuffled control), with what its folds held out whole: a cell-level run's numbers
    are optimistic, and whoever reads them must be told."""
    wanted = store.query(
        "SELECT run_id, split, coalesce(grouping, CASE WHEN cell_level THEN 'cell' END) "
        "AS grouping FROM runs WHERE kind = 'evaluate' AND embedding = ? AND classifier = ? "
        "AND selection IS NOT DISTINCT FROM ? AND control IS NULL ORDER BY created_at DESC",
        [embedding, classifier, where],
    )
    if wanted.empty:
        return None
    run_id, split = wanted.iloc[0]["run_id"], wanted.iloc[0]["split"]
    grouping = wanted.iloc[0]["grouping"]
    results = store.query(
        "SELECT metric, avg(value) AS value FROM results WHERE run_id = ? AND scope = 'pooled' "
        "GROUP BY metric ORDER BY metric",
        [run_id],
    )
    return {
        "run_id": run_id,
        "split": split,
        "grouping": grouping if isinstance(grouping, str) else None,
        "optimistic": grouping == "cell",
        "metrics": {r.metric: float(r.value) for r in results.itertuples()},
    }


def train_predictor(
    store,
    embedding: str,
    classifier: str,
    name: str,
    *,
    where: str | None = None,
    seed: int = 0,
    replace: bool = False,
    domain_quantile: float = QUANTILE,
) -> dict:
    """Fit on all selected labelled cells and save; returns the predictor's record.
    `domain_quantile`: the share of training-like cells its domain admits."""
    from scdrugmap.store.storage import check_key

    check_key(name, "predictor name")
    check_quantile(domain_quantile)
    folder = predictor_path(store, name)
    if folder.exists() and not replace:
        raise StoreError(f"predictor {name!r} exists; choose another --name or pass --replace")
    chosen = choose_for_embedding(store, embedding, where)
    where = chosen.where
    provenance = _embedding_provenance(store, embedding)
    model = make_classifier(classifier, seed=seed, n_jobs=os.cpu_count() or 1)
    cells = store.cells(
        where,
        columns=("dataset_id", "cell_index", "label", "sample", "n_genes", "content_hash"),
    )
    cells, left_notes = leave_out(cells, [failed_cells(store, embedding)])
    if cells.empty:
        raise InputError("the selection holds no labelled cells; check it with `scdrugmap sql`")
    features = store.load_embedding(embedding, cells)
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    model.fit(features, labels)
    domain = build_domain(features, quantile=domain_quantile, seed=seed)
    calibration = fit_calibration(
        lambda: make_classifier(classifier, seed=seed, n_jobs=os.cpu_count() or 1),
        features,
        labels,
        (cells["dataset_id"] + "/" + cells["sample"]).to_numpy(dtype=str),
        cells["dataset_id"].to_numpy(dtype=str),
        _copy_hashes(cells),
        seed=seed,
    )
    record = {
        "name": name,
        "classifier": classifier,
        "seed": seed,
        "selection": where,
        "selection_message": chosen.message,
        "left_out": left_notes,
        "n_cells": len(cells),
        "n_sensitive": int(labels.sum()),
        "embedding": provenance,
        "cross_validated": _cross_validated(store, embedding, classifier, where),
        "calibration": calibration.summary(),
        "domain": domain.summary(),
        "versions": package_versions(),
        "created_at": utc_now().isoformat(),
    }
    staging = folder.with_name(f".creating-{name}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    record["model_file"] = save_classifier(classifier, model, staging)
    record["calibration"]["file"] = (
        save_calibrator(calibration.calibrator, staging) if calibration.calibrator else None
    )
    domain.save(staging)
    np.savez_compressed(
        staging / CELLS,
        dataset_id=cells["dataset_id"].to_numpy(dtype=str),
        cell_index=cells["cell_index"].to_numpy(dtype=np.int64),
    )
    (staging / RECORD).write_text(json.dumps(record, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    _catalog_row(store, record)
    return record


def _catalog_row(store, record: dict) -> None:
    row = pd.DataFrame(
        [
            {
                "name": record["name"],
                "embedding": record["embedding"]["key"],
                "model": record["embedding"]["model"],
                "classifier": record["classifier"],
                "selection": record["selection"],
                "n_cells": record["n_cells"],
                "cross_validated": canonical_json(record["cross_validated"]),
                "calibration": canonical_json(record["calibration"]),
                "created_at": pd.Timestamp(record["created_at"]),
            }
        ]
    )
    with connect(store.catalog_path, write=True) as con:
        con.register("incoming", row)
        con.execute("DELETE FROM predictors WHERE name = ?", [record["name"]])
        con.execute("INSERT INTO predictors BY NAME SELECT * FROM incoming")


def read_predictor_record(store, name: str) -> dict:
    """A saved predictor's record (provenance, metrics), without loading its model."""
    path = predictor_path(store, name) / RECORD
    if not path.is_file():
        raise StoreError(f"no predictor {name!r}; train one with `scdrugmap train`")
    return json.loads(path.read_text())


def load_predictor(store, name: str) -> tuple[dict, object]:
    """(record, model with predict_proba) of a saved predictor: the raw classifier;
    `load_calibration` gives what turns its probabilities into the calibrated ones."""
    record = read_predictor_record(store, name)
    return record, load_classifier(record["classifier"], predictor_path(store, name))


def load_calibration(store, name: str) -> Calibrator | None:
    """A saved predictor's calibrator; None for one kept without (see saved.py)."""
    return load_calibrator(predictor_path(store, name))


def load_domain_index(store, name: str) -> DomainIndex | None:
    """A saved predictor's domain index; None for one trained before indexes were kept."""
    return load_domain(predictor_path(store, name))

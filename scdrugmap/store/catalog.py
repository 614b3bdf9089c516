"""The DuckDB catalog: schema and connections.

DuckDB admits one writing process per file, and a reader cannot attach while a
writer holds the file. Every operation therefore opens the catalog for as short
a time as it can and retries briefly when another scdrugmap process holds the
lock, so a long `embed` never blocks a `sql` from another terminal for long.

Within one process DuckDB refuses a read-only and a writing connection to the
same file at once, so threads of one process (the HTTP service answering
queries while a prediction job writes) take turns: a connection holds its
catalog's process-wide lock while it is open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from scdrugmap.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id VARCHAR PRIMARY KEY,
    n_cells BIGINT NOT NULL,
    n_genes BIGINT NOT NULL,
    n_samples BIGINT NOT NULL,
    n_sensitive BIGINT NOT NULL,
    n_resistant BIGINT NOT NULL,
    n_unknown BIGINT NOT NULL,
    drug VARCHAR,
    cancer_type VARCHAR,
    tissue VARCHAR,
    therapy VARCHAR,
    regimen VARCHAR,
    species VARCHAR,
    value_type VARCHAR NOT NULL,
    gene_id_type VARCHAR,
    gene_id_counts MAP(VARCHAR, BIGINT),
    meta MAP(VARCHAR, VARCHAR),
    source_files VARCHAR[],
    barcode_prefixed BOOLEAN,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    dataset_id VARCHAR NOT NULL,
    cell_index BIGINT NOT NULL,
    barcode VARCHAR NOT NULL,
    sample VARCHAR NOT NULL,
    label VARCHAR NOT NULL,
    n_counts DOUBLE,
    n_genes BIGINT,
    source_file VARCHAR,
    content_hash VARCHAR
);
-- content_hash: 32 hex characters of the cell's (gene identifier, value) multiset
-- (scdrugmap.data.content_hash), equal for the same cells in any file, gene order or label.
-- Stores made before the column existed gain it here; their old cells keep NULL (they are
-- left out of shared_cells) until their data set is ingested again.
ALTER TABLE cells ADD COLUMN IF NOT EXISTS content_hash VARCHAR;
CREATE TABLE IF NOT EXISTS embeddings (
    key VARCHAR NOT NULL,
    dataset_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    dim BIGINT NOT NULL,
    dtype VARCHAR NOT NULL,
    n_cells BIGINT NOT NULL,
    chunk_size BIGINT NOT NULL,
    n_chunks BIGINT NOT NULL,
    chunks_done BIGINT NOT NULL,
    complete BOOLEAN NOT NULL,
    weights_sha256 VARCHAR,
    settings_hash VARCHAR NOT NULL,
    settings VARCHAR NOT NULL,
    versions VARCHAR NOT NULL,
    mean_coverage DOUBLE,
    created_at TIMESTAMP NOT NULL,
    completed_at TIMESTAMP,
    PRIMARY KEY (key, dataset_id)
);
CREATE TABLE IF NOT EXISTS splits (
    split_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    n_folds BIGINT NOT NULL,
    n_cells BIGINT NOT NULL,
    cell_level BOOLEAN NOT NULL,
    note VARCHAR,
    params VARCHAR NOT NULL,
    selection VARCHAR,
    created_at TIMESTAMP NOT NULL,
    grouping VARCHAR
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    embedding VARCHAR NOT NULL,
    classifier VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    split_id VARCHAR NOT NULL,
    selection VARCHAR,
    seed BIGINT NOT NULL,
    params VARCHAR NOT NULL,
    n_cells BIGINT NOT NULL,
    n_folds BIGINT NOT NULL,
    cell_level BOOLEAN NOT NULL,
    note VARCHAR,
    seconds DOUBLE,
    versions VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    grouping VARCHAR,
    control VARCHAR,
    fit_datasets VARCHAR[]
);
-- Columns added after the first stores were made; a run from before them reads NULL.
-- grouping: what the folds held out whole (sample, dataset, cell, none); control:
-- NULL for a real run, 'shuffled' for its label-shuffled twin; fit_datasets: the data
-- sets a fitted baseline embedding (pca, hvg) learned from, NULL for checkpoint models.
ALTER TABLE splits ADD COLUMN IF NOT EXISTS grouping VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS grouping VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS control VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS fit_datasets VARCHAR[];
CREATE TABLE IF NOT EXISTS results (
    run_id VARCHAR NOT NULL,
    fold BIGINT NOT NULL,
    fold_name VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    dataset_id VARCHAR,
    metric VARCHAR NOT NULL,
    value DOUBLE,
    reason VARCHAR,
    n_train BIGINT NOT NULL,
    n_test BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id VARCHAR NOT NULL,
    fold BIGINT NOT NULL,
    dataset_id VARCHAR NOT NULL,
    cell_index BIGINT NOT NULL,
    label TINYINT,
    prob_sensitive FLOAT NOT NULL,
    predicted TINYINT NOT NULL,
    domain_score FLOAT,
    in_domain BOOLEAN
);
-- domain_score / in_domain: a cell's applicability domain (scdrugmap.predict.domain), the
-- percentile of its k-NN distance to the training cells among theirs and whether it is
-- below the quantile; NULL for rows scored without a domain index (cross-validation and
-- zero-shot runs keep none). Stores from before the columns gain them here.
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS domain_score FLOAT;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS in_domain BOOLEAN;
CREATE TABLE IF NOT EXISTS predictors (
    name VARCHAR PRIMARY KEY,
    embedding VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    classifier VARCHAR NOT NULL,
    selection VARCHAR,
    n_cells BIGINT NOT NULL,
    cross_validated VARCHAR,
    created_at TIMESTAMP NOT NULL
);
-- prob_calibrated: a held-out cell's probability after the calibrator its fold fitted on
-- its training cells (evaluate); NULL for runs that calibrate nothing (fine-tuning,
-- zero-shot) and runs from before calibration. calibration: JSON of how a predictor's
-- probabilities are calibrated (method platt or isotonic, the inner folds' grouping,
-- out-of-fold ece and brier before and after, reliability bins); NULL for older ones.
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS prob_calibrated FLOAT;
ALTER TABLE predictors ADD COLUMN IF NOT EXISTS calibration VARCHAR;
CREATE TABLE IF NOT EXISTS failures (
    key VARCHAR NOT NULL,
    dataset_id VARCHAR NOT NULL,
    cell_index BIGINT NOT NULL,
    reason VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS zeroshot_failures (
    run_id VARCHAR NOT NULL,
    dataset_id VARCHAR NOT NULL,
    cell_index BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    attempts BIGINT NOT NULL,
    reason VARCHAR NOT NULL
);
CREATE OR REPLACE VIEW cell_meta AS
    SELECT c.*, d.drug, d.cancer_type, d.tissue, d.therapy, d.regimen, d.species,
           d.value_type, d.meta
    FROM cells c JOIN datasets d USING (dataset_id);
-- Cells one data set shares with another (the same content_hash), per ordered pair:
-- n_shared counts distinct cells of dataset_id with a copy in other_dataset_id, and
-- n_conflicting those of them with a copy of the opposite label (sensitive against
-- resistant; unknown conflicts with nothing). Cells expressing no gene are left out: they
-- all hash alike, and two empty cells are no sign of a copied table. One hash join.
CREATE OR REPLACE VIEW shared_cells AS
    WITH hashed AS (
        SELECT dataset_id, label, content_hash FROM cells
        WHERE content_hash IS NOT NULL AND n_genes > 0
    ), copies AS (
        SELECT content_hash, dataset_id AS other_dataset_id,
               bool_or(label = 'sensitive') AS has_sensitive,
               bool_or(label = 'resistant') AS has_resistant
        FROM hashed GROUP BY content_hash, dataset_id
    )
    SELECT h.dataset_id, c.other_dataset_id, count(*) AS n_shared,
           count(*) FILTER (
               WHERE (h.label = 'sensitive' AND c.has_resistant)
                  OR (h.label = 'resistant' AND c.has_sensitive)
           ) AS n_conflicting
    FROM hashed h JOIN copies c
        ON h.content_hash = c.content_hash AND h.dataset_id <> c.other_dataset_id
    GROUP BY h.dataset_id, c.other_dataset_id;
"""

_LOCK_RETRY_SECONDS = 30.0
_OPEN_IN_PROCESS: dict[Path, threading.RLock] = {}
_REGISTRY_LOCK = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    with _REGISTRY_LOCK:
        return _OPEN_IN_PROCESS.setdefault(path.resolve(), threading.RLock())


def _is_lock_error(error: duckdb.Error) -> bool:
    text = str(error)
    return "lock" in text.lower() or "Conflicting lock" in text


@contextmanager
def connect(path: Path, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the catalog, retrying while another process holds its lock."""
    if not write and not path.exists():
        raise StoreError(f"{path.parent}: no scdrugmap store here; ingest a data set first")
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
    with _process_lock(path), _open(path, write) as con:
        yield con


@contextmanager
def _open(path: Path, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    deadline = time.monotonic() + _LOCK_RETRY_SECONDS
    while True:
        try:
            con = duckdb.connect(str(path), read_only=not write)
            break
        except duckdb.IOException as error:
            first_line = str(error).splitlines()[0]
            if not _is_lock_error(error):
                raise StoreError(f"{path}: cannot open the catalog ({first_line})") from error
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{path}: the catalog is locked by another process ({first_line}); "
                    "wait for it to finish"
                ) from error
            time.sleep(0.1)
    try:
        if write:
            con.execute(SCHEMA)
        yield con
    finally:
        con.close()

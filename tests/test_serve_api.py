"""`scdrugmap serve` as a client sees it: a real server process on 127.0.0.1, real HTTP."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from scdrugmap.predict.train import load_predictor
from scdrugmap.store.store import Store
from tests.data_files import write_10x_h5, write_h5ad
from tests.serve_server import (
    PREDICTOR,
    negative_counts_table,
    patient_table,
    running_server,
    store_with_predictor,
    wait_for_job,
)
from tests.synthetic import GENES, counts_matrix, tree_digest, write_genes_by_cells
from tests.test_cli import cli

UPLOAD_LIMIT_MB = 0.5
SQL_ROWS = 5
TOKEN = "a-long-enough-test-token-1234"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return store_with_predictor(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(store: Store):
    options = ("--max-upload-mb", str(UPLOAD_LIMIT_MB), "--sql-rows", str(SQL_ROWS))
    with (
        running_server(store.path, *options, "--sql-seconds", "0.5") as base,
        httpx.Client(base_url=base, timeout=60) as session,
    ):
        yield session


def _upload(client: httpx.Client, path: Path, **query) -> httpx.Response:
    params = {"predictor": PREDICTOR, "filename": path.name, **query}
    return client.post("/api/jobs", params=params, content=path.read_bytes())


def _predicted(client: httpx.Client, path: Path, **query) -> dict:
    response = _upload(client, path, **query)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["state"] == "done", job
    return job


def test_the_store_is_listed(client: httpx.Client) -> None:
    datasets = client.get("/api/datasets").json()
    assert {d["dataset_id"] for d in datasets} >= {"ds0", "ds1"}
    assert next(d for d in datasets if d["dataset_id"] == "ds0")["n_cells"] == 120
    embeddings = client.get("/api/embeddings").json()
    assert {(e["key"], e["dataset_id"]) for e in embeddings} >= {("pca", "ds0"), ("pca", "ds1")}
    assert all(e["complete"] for e in embeddings)
    (predictor,) = client.get("/api/predictors").json()
    assert predictor["name"] == PREDICTOR and predictor["classifier"] == "logreg"
    assert predictor["cross_validated"]["split"] == "pooled"
    record = client.get(f"/api/predictors/{PREDICTOR}").json()
    assert record["embedding"]["model"] == "pca" and record["n_cells"] == 240
    assert [f["figure"] for f in record["figures"]] == ["roc_pr", "f1_by_dataset", "f1_bars"]
    (run,) = client.get("/api/runs").json()
    results = client.get("/api/results").json()
    assert {r["run_id"] for r in results} == {run["run_id"]}
    assert {"f1_sensitive", "auroc"} <= {r["metric"] for r in results}
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/api/jobs", "/api/sql", "/api/jobs/{job_id}/cells.csv"} <= set(paths)


def test_predictor_figures_are_png_and_svg(client: httpx.Client) -> None:
    for figure in ("roc_pr", "f1_by_dataset", "f1_bars"):
        png = client.get(f"/api/predictors/{PREDICTOR}/figures/{figure}.png")
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")
        svg = client.get(f"/api/predictors/{PREDICTOR}/figures/{figure}.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert b"<svg" in svg.content[:2000]


def test_a_table_upload_gives_the_predictors_calls(client, store: Store, tmp_path) -> None:
    upload = patient_table(tmp_path / "patient-a.tsv", resistant=False)
    job = _predicted(client, upload)
    assert job["n_cells"] == 40 and job["fraction"] == 1.0 and job["done"] == 40
    (sample,) = client.get(f"/api/jobs/{job['id']}/samples.json").json()
    assert sample["sample"] == "patient-a" and sample["call"] == "sensitive"
    page = client.get(f"/api/jobs/{job['id']}/cells.json", params={"limit": 15, "offset": 30})
    assert page.json()["total"] == 40 and len(page.json()["cells"]) == 10
    cells = pd.read_csv(io.StringIO(client.get(f"/api/jobs/{job['id']}/cells.csv").text))
    assert list(cells.columns) == ["barcode", "sample", "prob_sensitive", "call", "map_x", "map_y"]
    as_json = pd.DataFrame(client.get(f"/api/jobs/{job['id']}/cells.json").json()["cells"])
    pd.testing.assert_frame_equal(as_json, cells, check_dtype=False, atol=1e-6)

    # The server's probabilities are the kept predictor's on the stored embedding.
    stored = store.cells(f"dataset_id = '{job['dataset_id']}'", labelled=False)
    _, model = load_predictor(store, PREDICTOR)
    expected = model.predict_proba(store.load_embedding("pca", stored))[:, 1]
    np.testing.assert_allclose(cells["prob_sensitive"], expected, atol=1e-6)
    assert (cells["call"] == np.where(expected >= 0.5, "sensitive", "resistant")).all()
    listed = {d["dataset_id"]: d for d in client.get("/api/datasets").json()}
    assert listed[job["dataset_id"]]["n_unknown"] == 40

    for figure in ("map", "histogram"):
        png = client.get(f"/api/jobs/{job['id']}/figures/{figure}.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        svg = client.get(f"/api/jobs/{job['id']}/figures/{figure}.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml")
    assert not (store.path / "serve" / "uploads").exists()


def test_an_h5ad_names_its_samples_by_column(client, tmp_path) -> None:
    counts = np.vstack([counts_matrix(30, False, 81), counts_matrix(30, True, 82)])
    barcodes = [f"cell{i}" for i in range(60)]
    patients = ["before"] * 30 + ["after"] * 30
    upload = write_h5ad(tmp_path / "pair.h5ad", counts, GENES, barcodes, {"patient": patients})
    job = _predicted(client, upload, sample_column="patient")
    samples = client.get(f"/api/jobs/{job['id']}/samples.json").json()
    calls = {s["sample"]: s["call"] for s in samples}
    assert calls == {"before": "sensitive", "after": "resistant"}


def test_a_10x_h5_upload_is_predicted(client, tmp_path) -> None:
    ids = [f"ENSG{i:011d}" for i in range(len(GENES))]
    upload = write_10x_h5(
        tmp_path / "run.h5", counts_matrix(25, True, 83), ids, GENES, [f"b{i}" for i in range(25)]
    )
    job = _predicted(client, upload, sample="biopsy")
    (sample,) = client.get(f"/api/jobs/{job['id']}/samples.json").json()
    assert sample == {**sample, "sample": "biopsy", "n_cells": 25, "call": "resistant"}


def test_a_bad_file_fails_with_the_ingest_message_and_changes_nothing(
    client, store: Store, tmp_path
) -> None:
    broken, ingest_message = negative_counts_table(tmp_path, "broken.tsv")
    before = tree_digest(store.path)
    response = _upload(client, broken)
    assert response.status_code == 202
    job = wait_for_job(client, response.json()["id"])
    assert job["state"] == "failed"
    assert job["error"] == ingest_message
    assert job["error"].startswith("broken.tsv: negative values")
    assert tree_digest(store.path) == before
    assert client.get(f"/api/jobs/{job['id']}/cells.json").status_code == 409

    unknown = client.post(
        "/api/jobs", params={"predictor": PREDICTOR, "filename": "cells.xlsx"}, content=b"x"
    )
    assert unknown.status_code == 400
    assert unknown.json()["detail"].startswith("cells.xlsx: unknown file format")
    assert tree_digest(store.path) == before


def test_cells_the_embedding_cannot_read_are_refused_and_removed(
    client, store: Store, tmp_path
) -> None:
    strangers = [f"OTHER{i}" for i in range(300)]
    upload = write_genes_by_cells(tmp_path / "other.tsv", counts_matrix(20, False, 84), strangers)
    datasets = {d["dataset_id"] for d in client.get("/api/datasets").json()}
    job = wait_for_job(client, _upload(client, upload).json()["id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("other.tsv: only 0% of expressed genes are in the pca vocab")
    assert job["error"].endswith("so none is made")
    assert {d["dataset_id"] for d in client.get("/api/datasets").json()} == datasets
    assert not (store.path / "datasets" / f"upload-{job['id']}.zarr").exists()
    assert not (store.path / "embeddings" / "pca" / f"upload-{job['id']}.zarr").exists()


def test_an_oversized_upload_is_refused_before_it_is_kept(client, store: Store, tmp_path) -> None:
    big = patient_table(tmp_path / "big.tsv", resistant=False, n_cells=1000)
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 1024**2
    before = tree_digest(store.path)
    jobs_before = client.get("/api/jobs").json()
    declared = _upload(client, big)
    assert declared.status_code == 413 and "limit of 0.5 MiB" in declared.json()["detail"]

    def chunks():
        data = big.read_bytes()
        for start in range(0, len(data), 8192):
            yield data[start : start + 8192]

    streamed = client.post(
        "/api/jobs", params={"predictor": PREDICTOR, "filename": "big.tsv"}, content=chunks()
    )
    assert streamed.status_code == 413
    assert tree_digest(store.path) == before
    assert client.get("/api/jobs").json() == jobs_before


def test_sql_reads_with_limits_and_never_writes(client, store: Store) -> None:
    answer = client.post("/api/sql", json={"query": "SELECT * FROM cells ORDER BY cell_index"})
    body = answer.json()
    assert answer.status_code == 200 and body["n_rows"] == SQL_ROWS and body["truncated"]
    assert body["columns"][:3] == ["dataset_id", "cell_index", "barcode"]
    small = client.post("/api/sql", json={"query": "SELECT 1 AS one", "limit": 3}).json()
    assert small["rows"] == [{"one": 1}] and not small["truncated"]

    before = tree_digest(store.path)
    outside = store.path.parent / "leaked.csv"
    for statement in (
        "DELETE FROM cells",
        "INSERT INTO datasets (dataset_id) VALUES ('x')",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW cell_meta",
        f"COPY cells TO '{outside}'",
        f"ATTACH '{store.path.parent / 'other.duckdb'}'",
        "SELECT 1; DELETE FROM cells",
        "SELECT * FROM read_csv('/etc/passwd')",
    ):
        refused = client.post("/api/sql", json={"query": statement})
        assert refused.status_code == 400, statement
        assert refused.json()["detail"], statement
    assert tree_digest(store.path) == before and not outside.exists()

    started = time.monotonic()
    slow = client.post(
        "/api/sql", json={"query": "SELECT count(*) FROM range(100000000000) a, range(100) b"}
    )
    assert slow.status_code == 400 and "time limit of 0.5 s" in slow.json()["detail"]
    assert time.monotonic() - started < 30


def test_no_request_reaches_outside_the_store(client, store: Store, tmp_path) -> None:
    upload = patient_table(tmp_path / "escape.tsv", resistant=True)
    params = {"predictor": PREDICTOR, "filename": "../../../escape.tsv"}
    response = client.post("/api/jobs", params=params, content=upload.read_bytes())
    job = wait_for_job(client, response.json()["id"])
    assert job["state"] == "done" and job["filename"] == "escape.tsv"
    root = store.path.parent
    assert not list(root.parent.glob("escape.tsv")) and not (root / "escape.tsv").exists()
    for path, status in (
        ("/api/jobs/..%2F..%2Fcatalog.duckdb/cells.csv", 404),
        ("/api/jobs/../../catalog.duckdb", 404),
        ("/static/../catalog.duckdb", 404),
        ("/static/%2e%2e/%2e%2e/catalog.duckdb", 404),
        (f"/api/jobs/{job['id']}/figures/..%2Fcells.png", 404),
        (f"/api/predictors/{PREDICTOR}/figures/other.png", 422),
        ("/api/predictors/..%2Fdatasets", 404),
        ("/api/predictors/a%20b", 400),
    ):
        answer = client.get(path)
        assert answer.status_code == status, (path, answer.status_code)
        assert b"CREATE" not in answer.content and b"DUCK" not in answer.content
    refused = client.post("/api/jobs", params={**params, "predictor": "../x"}, content=b"x")
    assert refused.status_code == 400 and "predictor name" in refused.json()["detail"]


def test_unknown_things_are_named(client) -> None:
    missing = client.post(
        "/api/jobs", params={"predictor": "nope", "filename": "a.tsv"}, content=b"x"
    )
    assert missing.status_code == 404 and "no predictor 'nope'" in missing.json()["detail"]
    assert client.get("/api/jobs/0123456789ab").status_code == 404
    empty = client.post("/api/jobs", params={"predictor": PREDICTOR, "filename": "a.tsv"})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]


def test_only_local_host_names_are_answered_without_a_token(client) -> None:
    assert client.get("/api/datasets", headers={"Host": "localhost"}).status_code == 200
    rebound = client.get("/api/datasets", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403


def test_finished_jobs_are_listed_again_after_a_restart(client, store: Store, tmp_path) -> None:
    job = _predicted(client, patient_table(tmp_path / "kept.tsv", resistant=True, seed=71))
    cells = client.get(f"/api/jobs/{job['id']}/cells.json").json()
    samples = client.get(f"/api/jobs/{job['id']}/samples.json").json()
    with running_server(store.path) as base, httpx.Client(base_url=base) as restarted:
        again = restarted.get(f"/api/jobs/{job['id']}").json()
        assert again == job
        assert restarted.get(f"/api/jobs/{job['id']}/cells.json").json() == cells
        assert restarted.get(f"/api/jobs/{job['id']}/samples.json").json() == samples
        assert job["id"] in {j["id"] for j in restarted.get("/api/jobs").json()}
        figure = restarted.get(f"/api/jobs/{job['id']}/figures/map.png")
        assert figure.content.startswith(b"\x89PNG")


def test_a_token_is_required_on_every_request(store: Store, tmp_path) -> None:
    upload = patient_table(tmp_path / "tokened.tsv", resistant=False)
    params = {"predictor": PREDICTOR, "filename": upload.name}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with (
        running_server(store.path, env={"SCDRUGMAP_TOKEN": TOKEN}) as base,
        httpx.Client(base_url=base, timeout=60) as bare,
        httpx.Client(base_url=base, timeout=60, headers=bearer) as authorised,
        httpx.Client(base_url=base, timeout=60) as browser,
    ):
        for path in ("/", "/api/datasets", "/api/openapi.json", "/static/app.js"):
            answer = bare.get(path)
            assert answer.status_code == 401 and "token" in answer.json()["detail"], path
        assert bare.post("/api/jobs", params=params, content=upload.read_bytes()).status_code == 401
        wrong = bare.get("/api/datasets", headers={"Authorization": "Bearer " + "x" * 30})
        assert wrong.status_code == 403
        assert bare.get("/api/datasets", params={"token": TOKEN[:-1]}).status_code == 403

        started = authorised.post("/api/jobs", params=params, content=upload.read_bytes())
        assert started.status_code == 202
        assert wait_for_job(authorised, started.json()["id"])["state"] == "done"

        page = browser.get("/", params={"token": TOKEN})
        assert page.status_code == 200 and "<title>scdrugmap" in page.text
        assert browser.get("/api/datasets").status_code == 200  # by the cookie it was given
        assert "httponly" in page.headers["set-cookie"].lower()


def test_serving_beyond_this_machine_needs_a_token(store: Store) -> None:
    # A time limit, so a server that wrongly started fails the test instead of hanging it.
    args = {"store": store.path, "check": False, "timeout": 60}
    refused = cli("serve", "--host", "0.0.0.0", "--port", "9", **args)
    assert refused.returncode != 0 and "--token" in refused.stderr
    short = cli("serve", "--token", "short", "--port", "9", **args)
    assert short.returncode != 0 and "at least 16" in short.stderr


def test_openapi_describes_the_upload_body(client) -> None:
    spec = client.get("/api/openapi.json").json()
    body = spec["paths"]["/api/jobs"]["post"]["requestBody"]
    assert "application/octet-stream" in body["content"]
    assert json.dumps(spec).count("sample_column") >= 1

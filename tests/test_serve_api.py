"""`scdrugmap serve` as a client sees it: a real server process on 127.0.0.1, real HTTP."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from scdrugmap import Store
from scdrugmap.data.obs_columns import CellColumns
from scdrugmap.predict.train import load_calibration, load_predictor
from scdrugmap.serve.uploads import MAX_STAGED, StagedUpload, StagedUploads
from tests.data_files import write_10x_h5, write_cells_by_genes, write_h5ad
from tests.serve_server import (
    PC9_PREDICTOR,
    PC9_UNSEEN,
    PREDICTOR,
    negative_counts_table,
    patient_table,
    running_server,
    store_with_pc9_predictor,
    store_with_predictor,
    wait_for_job,
    write_pc9_h5ad,
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


@pytest.fixture(scope="module")
def pc9_client(tmp_path_factory):
    """A server whose predictor was fitted on real PC9 cells, for uploads of real cells."""
    store = store_with_pc9_predictor(tmp_path_factory.mktemp("serve-pc9"))
    with (
        running_server(store.path) as base,
        httpx.Client(base_url=base, timeout=60) as session,
    ):
        yield session


def _stage(client: httpx.Client, path: Path, name: str | None = None) -> httpx.Response:
    params = {"filename": name or path.name}
    return client.post("/api/uploads", params=params, content=path.read_bytes())


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
    assert [f["figure"] for f in record["figures"]] == [
        "roc_pr",
        "f1_by_dataset",
        "f1_bars",
        "reliability",
    ]
    (run,) = client.get("/api/runs").json()
    results = client.get("/api/results").json()
    assert {r["run_id"] for r in results} == {run["run_id"]}
    assert {"f1_sensitive", "auroc"} <= {r["metric"] for r in results}
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/api/jobs", "/api/sql", "/api/jobs/{job_id}/cells.csv"} <= set(paths)


def test_predictor_figures_are_png_and_svg(client: httpx.Client) -> None:
    for figure in ("roc_pr", "f1_by_dataset", "f1_bars", "reliability"):
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
    cells = pd.read_csv(
        io.StringIO(client.get(f"/api/jobs/{job['id']}/cells.csv").text), keep_default_na=False
    )
    assert list(cells.columns) == [
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
    ]
    assert job["gene_coverage"] == 1.0 and "pca panel" in job["coverage_basis"]
    as_json = pd.DataFrame(client.get(f"/api/jobs/{job['id']}/cells.json").json()["cells"])
    pd.testing.assert_frame_equal(as_json, cells, check_dtype=False, atol=1e-6)

    # The server's probabilities are the kept predictor's on the stored embedding, calibrated.
    stored = store.cells(f"dataset_id = '{job['dataset_id']}'", labelled=False)
    _, model = load_predictor(store, PREDICTOR)
    raw = model.predict_proba(store.load_embedding("pca", stored))[:, 1]
    expected = load_calibration(store, PREDICTOR)(raw)
    np.testing.assert_allclose(cells["prob_sensitive_raw"], raw, atol=1e-6)
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
    assert job["stage"].startswith("reading")  # where it failed, not "failed" again
    assert client.get("/api/jobs").json()[0] == job  # listed, newest first
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
    assert job["error"].startswith("other.tsv: only 0% of the 300 genes of the pca panel are in")
    assert job["error"].endswith("so no call is made")
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
    staged = client.post("/api/uploads", params={"filename": "big.tsv"}, content=chunks())
    assert staged.status_code == 413 and "limit of 0.5 MiB" in staged.json()["detail"]
    assert _stage(client, big).status_code == 413
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
        assert _stage(bare, upload).status_code == 401
        wrong = bare.get("/api/datasets", headers={"Authorization": "Bearer " + "x" * 30})
        assert wrong.status_code == 403
        assert bare.get("/api/datasets", params={"token": TOKEN[:-1]}).status_code == 403

        started = authorised.post("/api/jobs", params=params, content=upload.read_bytes())
        assert started.status_code == 202
        assert wait_for_job(authorised, started.json()["id"])["state"] == "done"
        staged = _stage(authorised, upload).json()["upload_id"]
        assert bare.delete(f"/api/uploads/{staged}").status_code == 401
        assert authorised.delete(f"/api/uploads/{staged}").status_code == 204

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
    staged = spec["paths"]["/api/uploads"]["post"]
    assert "application/octet-stream" in staged["requestBody"]["content"]
    assert "suggested_sample_column" in staged["description"]
    job_params = {p["name"] for p in spec["paths"]["/api/jobs"]["post"]["parameters"]}
    assert {"upload", "filename", "sample_column"} <= job_params
    assert "delete" in spec["paths"]["/api/uploads/{upload_id}"]


def test_an_upload_offers_its_per_cell_columns(client, store: Store, tmp_path) -> None:
    before = tree_digest(store.path)
    counts = counts_matrix(30, False, 90)
    barcodes = [f"cell{i}" for i in range(30)]
    obs = {"n_genes": list(range(30)), "Patient": ["p1"] * 15 + ["p2"] * 15}
    h5ad = _stage(client, write_h5ad(tmp_path / "obs.h5ad", counts, GENES, barcodes, obs))
    assert h5ad.status_code == 201, h5ad.text
    assert h5ad.json() == {
        **h5ad.json(),
        "filename": "obs.h5ad",
        "n_cells": 30,
        "columns": ["n_genes", "Patient"],
        "suggested_sample_column": "Patient",
    }
    rows = {"cell_type": ["T"] * 30, "sample": ["a"] * 30, "donor": ["d"] * 30}
    table = write_cells_by_genes(tmp_path / "rows.csv", counts, GENES, barcodes, rows, sep=",")
    by_rows = _stage(client, table).json()
    assert by_rows["columns"] == ["cell_type", "sample", "donor"]
    assert by_rows["suggested_sample_column"] == "sample" and by_rows["n_cells"] is None
    genes_by_cells = _stage(client, patient_table(tmp_path / "plain.tsv", resistant=False)).json()
    assert genes_by_cells["columns"] == [] and genes_by_cells["suggested_sample_column"] is None
    ids = [f"ENSG{i:011d}" for i in range(len(GENES))]
    tenx = write_10x_h5(tmp_path / "run.h5", counts_matrix(25, True, 91), ids, GENES, barcodes[:25])
    by_shape = _stage(client, tenx).json()
    assert by_shape["n_cells"] == 25 and by_shape["columns"] == []

    junk = tmp_path / "junk.h5ad"
    junk.write_bytes(b"not an hdf5 file" * 10)
    refused = _stage(client, junk)
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("junk.h5ad: cannot read it as a AnnData .h5ad")
    assert str(store.path) not in refused.json()["detail"]
    nameless = client.post("/api/uploads", content=b"x")
    assert nameless.status_code == 400 and "?filename=" in nameless.json()["detail"]

    for upload in (h5ad.json(), by_rows, genes_by_cells, by_shape):
        assert client.delete(f"/api/uploads/{upload['upload_id']}").status_code == 204
    gone = client.delete(f"/api/uploads/{by_rows['upload_id']}")
    assert gone.status_code == 404 and gone.json()["detail"].startswith("no upload")
    assert tree_digest(store.path) == before


def test_a_job_takes_its_upload_and_its_sample_column(pc9_client, tmp_path) -> None:
    cells = {"control": PC9_UNSEEN, "erlotinib": PC9_UNSEEN}
    path = write_pc9_h5ad(tmp_path / "patients.h5ad", cells, column="patient")
    upload = _stage(pc9_client, path).json()
    assert upload["suggested_sample_column"] == "patient" and upload["n_cells"] == 100
    query = {"predictor": PC9_PREDICTOR, "upload": upload["upload_id"]}
    started = pc9_client.post("/api/jobs", params={**query, "sample_column": "patient"})
    assert started.status_code == 202, started.text
    job = wait_for_job(pc9_client, started.json()["id"])
    assert job["state"] == "done", job
    assert job["filename"] == "patients.h5ad" and job["sample_column"] == "patient"
    samples = pc9_client.get(f"/api/jobs/{job['id']}/samples.json").json()
    assert {s["sample"]: s["n_cells"] for s in samples} == {"control": 50, "erlotinib": 50}

    again = pc9_client.post("/api/jobs", params=query)
    assert again.status_code == 404 and "took it already" in again.json()["detail"]
    both = pc9_client.post("/api/jobs", params={**query, "filename": "patients.h5ad"})
    neither = pc9_client.post("/api/jobs", params={"predictor": PC9_PREDICTOR})
    for refused in (both, neither):
        assert refused.status_code == 400 and "one of the two" in refused.json()["detail"]
    unknown = pc9_client.post("/api/jobs", params={**query, "predictor": "nope"})
    assert unknown.status_code == 404 and "no predictor 'nope'" in unknown.json()["detail"]


def test_unused_uploads_are_bounded_and_deleted_when_the_server_stops(store: Store, tmp_path):
    table = patient_table(tmp_path / "unused.tsv", resistant=False)
    before = tree_digest(store.path / "serve" / "staged")
    with running_server(store.path) as base, httpx.Client(base_url=base, timeout=60) as fresh:
        ids = [_stage(fresh, table).json()["upload_id"] for _ in range(MAX_STAGED + 2)]
        kept = {p.name for p in (store.path / "serve" / "staged").iterdir()}
        assert set(ids[2:]) <= kept and not set(ids[:2]) & kept
        oldest = fresh.post("/api/jobs", params={"predictor": PREDICTOR, "upload": ids[0]})
        assert oldest.status_code == 404 and "upload the file again" in oldest.json()["detail"]
    assert tree_digest(store.path / "serve" / "staged") == before


def test_stale_uploads_are_deleted(tmp_path) -> None:
    folder = tmp_path / "serve" / "staged"
    left = folder / "0123456789ab" / "left.tsv"
    young = folder / "ba9876543210" / "young.tsv"
    for path in (left, young):
        path.parent.mkdir(parents=True)
        path.write_text("x")
    hour_ago = time.time() - 3600
    os.utime(left.parent, (hour_ago, hour_ago))
    uploads = StagedUploads(folder, max_count=4, max_age_s=0.5)
    assert not left.parent.exists() and young.exists()  # a second server's, maybe

    def staged(name: str) -> StagedUpload:
        upload_id, path = uploads.new_path(name)
        path.parent.mkdir(parents=True)
        path.write_text("x")
        upload = StagedUpload(upload_id, name, 1, CellColumns())
        uploads.add(upload)
        return upload

    first = staged("first.tsv")
    time.sleep(0.6)
    second = staged("second.tsv")
    assert not uploads.path(first).exists() and uploads.take(first.id) is None
    assert uploads.path(second).exists()
    uploads.clear()
    assert young.exists() and not uploads.path(second).parent.exists()

"""The command line, run as a user runs it: real subprocesses on a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from tests.synthetic import counts_matrix, write_genes_by_cells


def cli(
    *args: str, store: Path | None = None, check: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scdrugmap.cli"]
    if store is not None:
        command += ["--store", str(store)]
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    files = [
        write_genes_by_cells(
            root / f"{name}.tsv.gz", counts_matrix(30, name.startswith("r"), i), prefix=f"{name}-"
        )
        for i, name in enumerate(["s1", "s2", "r1", "r2"])
    ]
    path = root / "store"
    cli(
        "ingest",
        *map(str, files),
        "--dataset",
        "toy",
        "--sample",
        "s1",
        "--sample",
        "s2",
        "--sample",
        "r1",
        "--sample",
        "r2",
        "--label",
        "sensitive",
        "--label",
        "sensitive",
        "--label",
        "resistant",
        "--label",
        "resistant",
        "--drug",
        "erlotinib",
        "--cancer-type",
        "lung adenocarcinoma",
        "--tissue",
        "cell line",
        "--therapy",
        "targeted",
        "--meta",
        "lab=ours",
        store=path,
    )
    cli("embed", "--model", "pca", "--datasets", "all", "--param", "n_components=8", store=path)
    return path


def test_help_everywhere_and_fast_imports() -> None:
    for command in [
        "",
        "demo",
        "ingest",
        "datasets",
        "embed",
        "embeddings",
        "sql",
        "evaluate",
        "benchmark",
        "results",
        "export",
        "models",
        "report",
        "finetune",
        "train",
        "predict",
        "serve",
    ]:
        result = cli(*([command] if command else []), "--help")
        assert "Usage:" in result.stdout
    probe = (
        "import sys; from click.testing import CliRunner; from scdrugmap.cli import main;"
        "CliRunner().invoke(main, ['--help']);"
        "heavy = [m for m in ('torch', 'sklearn', 'lightgbm', 'anndata', 'zarr', 'matplotlib')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == ""


def _modules_loaded_by(store: Path, args: list[str], watched: tuple[str, ...]) -> str:
    probe = (
        "import sys; from click.testing import CliRunner; from scdrugmap.cli import main;"
        f"result = CliRunner().invoke(main, ['--store', {str(store)!r}, *{args!r}]);"
        "assert result.exit_code == 0, result.output;"
        f"print(','.join(m for m in {watched!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    return loaded.stdout.strip()


def test_sql_and_datasets_import_neither_pandas_nor_torch(store: Path) -> None:
    for args in (["sql", "SELECT 1"], ["datasets"]):
        assert _modules_loaded_by(store, args, ("torch", "sklearn", "pandas", "zarr")) == ""


def test_results_does_not_import_torch_or_sklearn(store: Path) -> None:
    assert _modules_loaded_by(store, ["results"], ("torch", "sklearn", "lightgbm")) == ""


def test_datasets_json(store: Path) -> None:
    rows = json.loads(cli("datasets", "--json", store=store).stdout)
    assert rows[0]["dataset_id"] == "toy"
    assert rows[0]["n_cells"] == 120 and rows[0]["n_samples"] == 4
    assert rows[0]["drug"] == "erlotinib"


def test_sql_reads_and_refuses_writes(store: Path) -> None:
    rows = json.loads(
        cli(
            "sql",
            "SELECT label, count(*) AS n FROM cells GROUP BY ALL ORDER BY ALL",
            "--json",
            store=store,
        ).stdout
    )
    assert rows == [{"label": "resistant", "n": 60}, {"label": "sensitive", "n": 60}]
    refused = cli("sql", "DROP TABLE cells", store=store, check=False)
    assert refused.returncode == 1
    assert "refused" in refused.stderr and "Traceback" not in refused.stderr
    assert len(json.loads(cli("sql", "SELECT * FROM cells", "--json", store=store).stdout)) == 120


def test_evaluate_results_and_report(store: Path, tmp_path: Path) -> None:
    out = json.loads(
        cli(
            "evaluate",
            "--embedding",
            "pca",
            "--classifier",
            "logreg",
            "--split",
            "pooled",
            "--folds",
            "2",
            "--where",
            "drug = 'erlotinib'",
            "--json",
            store=store,
        ).stdout
    )
    assert out["n_cells"] == 120 and out["cell_level"] is False
    table = cli("results", store=store).stdout
    assert "pca" in table and "logreg" in table and "±" in table
    report = cli("report", "--out", str(tmp_path / "report"), store=store)
    assert (tmp_path / "report" / "index.html").is_file(), report.stdout
    assert (tmp_path / "report" / "roc_pr_curves.svg").is_file()


def test_export_writes_h5ad_with_the_embedding(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "toy.h5ad"
    cli("export", "--embedding", "pca", "--dataset", "toy", "--out", str(out), store=store)
    adata = ad.read_h5ad(out)
    barcodes = json.loads(
        cli("sql", "SELECT barcode FROM cells ORDER BY cell_index", "--json", store=store).stdout
    )
    assert list(adata.obs_names) == [row["barcode"] for row in barcodes]
    assert adata.obsm["X_pca"].shape == (120, 8)
    assert {"sample", "label"} <= set(adata.obs.columns)
    assert np.isfinite(adata.obsm["X_pca"]).all()
    assert adata.X.sum() > 0


def test_errors_are_one_line_with_exit_code_one(store: Path, tmp_path: Path) -> None:
    missing = cli("ingest", str(tmp_path / "nope.tsv"), "--dataset", "x", store=store, check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error:") and missing.stderr.count("\n") == 1
    unknown = cli("embed", "--model", "nomodel", store=store, check=False)
    assert unknown.returncode == 1 and "pca" in unknown.stderr
    empty = cli("datasets", store=tmp_path / "nothing")
    assert "nothing yet" in empty.stdout


def test_models_lists_the_baselines() -> None:
    rows = json.loads(cli("models", "--json").stdout)
    assert {"pca", "hvg"} <= {row["model"] for row in rows}


def test_tables_print_brackets_as_data_not_markup() -> None:
    assert "[gene_name_id_dict.pkl]" in cli("models").stdout


def test_train_keeps_a_predictor(store: Path) -> None:
    result = cli(
        "train", "--embedding", "pca", "--classifier", "logreg", "--name", "toy-lr", store=store
    )
    assert "predictor 'toy-lr': logreg on pca, 120 cells" in result.stdout
    listed = json.loads(
        cli("sql", "SELECT name, n_cells FROM predictors", "--json", store=store).stdout
    )
    assert {"name": "toy-lr", "n_cells": 120} in listed
    again = cli(
        "train",
        "--embedding",
        "pca",
        "--classifier",
        "logreg",
        "--name",
        "toy-lr",
        store=store,
        check=False,
    )
    assert again.returncode == 1 and "exists" in again.stderr


def test_predict_writes_calls_for_new_cells(store: Path, tmp_path: Path) -> None:
    cli(
        "train",
        "--embedding",
        "pca",
        "--classifier",
        "logreg",
        "--name",
        "toy-predict",
        store=store,
    )
    new = write_genes_by_cells(tmp_path / "new.tsv", counts_matrix(20, True, 77), prefix="n-")
    out = tmp_path / "calls.csv"
    result = cli(
        "predict",
        "--predictor",
        "toy-predict",
        str(new),
        "--sample",
        "patient",
        "--out",
        str(out),
        "--json",
        store=store,
    )
    summary = json.loads(result.stdout)
    assert summary["samples"][0]["sample"] == "patient"
    assert summary["samples"][0]["n_cells"] == 20 and summary["samples"][0]["call"] == "resistant"
    assert out.is_file() and (tmp_path / "calls.samples.csv").is_file()

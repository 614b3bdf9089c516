"""Baseline embedders through the streaming runner, on real zarr stores."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from sklearn.decomposition import PCA

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.embed.baselines.expression import log_cp10k
from scdrugmap.embed.baselines.fit import (
    FitSource,
    covariance,
    gene_moments,
    principal_axes,
    select_variable_genes,
)
from scdrugmap.embed.baselines.pca import PROJECT_ROWS, PCAEmbedder
from scdrugmap.errors import InputError, StoreError
from tests.store_builders import ingest_pc9, ingest_synthetic, synthetic_store
from tests.synthetic import counts_matrix, write_genes_by_cells


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    built = synthetic_store(tmp_path_factory.mktemp("embed"))
    built.embed("pca", chunk_size=1000)
    built.embed("hvg", chunk_size=1000, n_top_genes=50)
    return built


@pytest.fixture(scope="module")
def pc9_pca(real_data: Path, tmp_path_factory) -> Store:
    """The real PC9 quarter (3,650 cells, both samples) embedded with the default PCA."""
    built = Store(tmp_path_factory.mktemp("pc9-pca") / "store")
    ingest_pc9(built, real_data / "pc9_erlotinib")
    built.embed("pca")
    return built


def test_pca_of_real_cells_is_the_in_memory_pca(pc9_pca: Store) -> None:
    """The streamed fit against the plain computation on every cell at once: the same
    2,000 genes (dispersion from the same moments), axes to 1e-10, and embeddings to 1e-4
    (rows reach 270; the float32 standardising rounds at 1.5e-5 there)."""
    reader = pc9_pca.reader("pc9")
    fit = np.load(pc9_pca.fit_path("pca") / "fit.npz")
    panel = [str(g) for g in fit["genes"]]
    dense = log_cp10k(reader.read_rows(0, reader.n_cells)).toarray().astype(np.float64)
    mean = dense.mean(axis=0)
    variance = np.maximum(np.square(dense).mean(axis=0) - mean**2, 0.0)
    assert select_variable_genes(reader.gene_ids, mean, variance, 2000, "counts") == panel
    values = dense[:, [reader.gene_ids.index(g) for g in panel]]
    scale = values.std(axis=0)
    scale[scale == 0] = 1.0
    np.testing.assert_allclose(fit["mean"], values.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fit["scale"], scale, rtol=1e-12)
    standardised = (values - values.mean(axis=0)) / scale
    pca = PCA(50, svd_solver="full").fit(standardised)
    largest = np.abs(pca.components_).argmax(axis=1)
    signs = np.sign(pca.components_[np.arange(50), largest])[:, None]
    np.testing.assert_allclose(fit["components"], pca.components_ * signs, atol=1e-10)
    np.testing.assert_allclose(
        fit["explained_variance"],
        pca.explained_variance_ * (reader.n_cells - 1) / reader.n_cells,
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        pc9_pca.embedding_array("pca", "pc9").read_all(),
        pca.transform(standardised) * signs.T,
        atol=1e-4,
    )


def test_fit_sums_do_not_depend_on_the_fit_chunk(pc9_pca: Store) -> None:
    """97-cell chunks against one chunk of all 3,650 cells: only the rounding of the chunk
    sums' additions differs (1e-16 relative), so the panel is the same and the axes agree
    to 1e-10."""
    reader = pc9_pca.reader("pc9")
    sources = [FitSource("pc9", reader, "counts")]
    one, small = reader.n_cells, 97
    moments = [gene_moments(sources, reader.gene_ids, None, 0, chunk_cells=c) for c in (one, small)]
    np.testing.assert_allclose(moments[0][0], moments[1][0], rtol=1e-13)
    np.testing.assert_allclose(moments[0][1], moments[1][1], rtol=1e-11, atol=1e-15)
    panels = [select_variable_genes(reader.gene_ids, m, v, 2000, "counts") for m, v, _ in moments]
    assert panels[0] == panels[1]
    fits = [covariance(sources, panels[0], None, 0, chunk_cells=c) for c in (one, small)]
    assert fits[0][2] == fits[1][2] == one
    np.testing.assert_allclose(fits[0][0], fits[1][0], rtol=1e-13)
    np.testing.assert_allclose(fits[0][1], fits[1][1], atol=1e-12)
    axes = []
    for _, cov, _ in fits:
        scale = np.sqrt(np.diag(cov))
        scale[scale == 0] = 1.0
        axes.append(principal_axes(cov / np.outer(scale, scale), 50)[0])
    np.testing.assert_allclose(axes[0], axes[1], atol=1e-10)


def test_real_projection_does_not_depend_on_the_chunk(pc9_pca: Store) -> None:
    """Bit for bit, in chunks smaller than a projection block and across blocks."""
    embedder = PCAEmbedder.load(pc9_pca.fit_path("pca"))
    reader = pc9_pca.reader("pc9")
    stored = pc9_pca.embedding_array("pca", "pc9").read_all()
    assert reader.n_cells > 3 * PROJECT_ROWS
    for chunk in (333, reader.n_cells):
        pieces = [
            embedder.embed(embedder.tokenize(counts, reader.gene_ids))
            for _, _, counts in reader.iter_chunks(chunk)
        ]
        np.testing.assert_array_equal(np.concatenate(pieces), stored)


def test_pca_embedding_shape_and_provenance(store: Store) -> None:
    array = store.embedding_array("pca", "ds0")
    values = array.read_all()
    assert values.shape == (240, 50)
    assert values.dtype == np.float32
    assert np.isfinite(values).all()
    attrs = array.attrs
    fit_bytes = (store.fit_path("pca") / "fit.npz").read_bytes()
    assert attrs["weights_sha256"] == hashlib.sha256(fit_bytes).hexdigest()
    assert attrs["model"] == "pca"
    assert attrs["settings"]["fit_datasets"] == ["ds0", "ds1"]
    assert {"numpy", "zarr", "scdrugmap"} <= set(attrs["versions"])
    assert len(attrs["settings_hash"]) == 16
    row = store.embeddings().query("key == 'pca'").set_index("dataset_id").loc["ds0"]
    assert bool(row["complete"]) and row["chunks_done"] == row["n_chunks"] == 1
    assert 0.0 < row["mean_coverage"] <= 1.0


def test_embedding_separates_the_labels(store: Store) -> None:
    cells = store.cells()
    values = store.load_embedding("pca", cells)
    sensitive = values[(cells["label"] == "sensitive").to_numpy()]
    resistant = values[(cells["label"] == "resistant").to_numpy()]
    gap = np.linalg.norm(sensitive.mean(0) - resistant.mean(0))
    spread = np.sqrt(values.var(0).sum())
    assert gap > 0.5 * spread


def test_hvg_values_are_log_cp10k_of_the_chosen_genes(store: Store) -> None:
    array = store.embedding_array("hvg", "ds1")
    genes = [str(g) for g in np.load(store.fit_path("hvg") / "fit.npz")["genes"]]
    assert len(genes) == 50
    reader = store.reader("ds1")
    expected = log_cp10k(reader.read_rows(0, reader.n_cells)).toarray()
    columns = [reader.gene_ids.index(g) for g in genes]
    np.testing.assert_allclose(array.read_all(), expected[:, columns], rtol=1e-6)
    coverage = array.read_coverage()
    expressed = reader.read_rows(0, reader.n_cells).toarray() > 0
    np.testing.assert_allclose(coverage, expressed[:, columns].sum(1) / expressed.sum(1), rtol=1e-6)


def test_embedding_does_not_depend_on_chunk_size(store: Store) -> None:
    """Bit for bit: a float32 product would differ in its last bits between BLAS kernels
    for few and many rows (seen with 2-cell chunks)."""
    for chunk_size in (2, 7):
        key = f"pca-chunks-of-{chunk_size}"
        store.embed("pca", key=key, chunk_size=chunk_size)
        for dataset_id in ("ds0", "ds1"):
            small = store.embedding_array(key, dataset_id)
            assert small.n_chunks == -(-240 // chunk_size)
            np.testing.assert_array_equal(
                small.read_all(), store.embedding_array("pca", dataset_id).read_all()
            )


def test_load_embedding_follows_the_selection_order(store: Store) -> None:
    cells = store.cells().sample(frac=1.0, random_state=3)
    values = store.load_embedding("pca", cells)
    for row, (dataset_id, index) in enumerate(zip(cells["dataset_id"], cells["cell_index"])):
        if row % 37 == 0:
            np.testing.assert_array_equal(
                values[row], store.embedding_array("pca", dataset_id).read_all()[index]
            )


def test_fit_is_applied_unchanged_to_a_later_data_set(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path, n_datasets=1, cells_per_sample=30)
    store.embed("pca", chunk_size=100)
    fit_before = (store.fit_path("pca") / "fit.npz").read_bytes()
    ingest_synthetic(store, "later", tmp_path / "later", cells_per_sample=30, seed=5)
    store.embed("pca", "later")
    assert (store.fit_path("pca") / "fit.npz").read_bytes() == fit_before
    attrs = store.embedding_array("pca", "later").attrs
    assert attrs["settings"]["fit_datasets"] == ["ds0"]
    fit = np.load(store.fit_path("pca") / "fit.npz")
    reader = store.reader("later")
    values = log_cp10k(reader.read_rows(0, reader.n_cells)).toarray()
    columns = [reader.gene_ids.index(str(g)) for g in fit["genes"]]
    expected = ((values[:, columns] - fit["mean"]) / fit["scale"]) @ fit["components"].T
    np.testing.assert_allclose(
        store.embedding_array("pca", "later").read_all(), expected, atol=1e-4
    )
    with pytest.raises(InputError, match="fitted on ds0"):
        store.embed("pca", "later", fit_on="later")


def test_float16_and_conflicting_settings(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path, n_datasets=1, cells_per_sample=10)
    store.embed("pca", key="half", dtype="float16")
    assert store.embedding_array("half", "ds0").read_all().dtype == np.float16
    with pytest.raises(StoreError, match="other settings"):
        store.embed("pca", key="half", dtype="float32")
    store.embed("pca", key="half", dtype="float32", replace=True)
    assert store.embedding_array("half", "ds0").read_all().dtype == np.float32


def test_counts_fit_refuses_normalised_data(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path, n_datasets=1, cells_per_sample=10)
    store.embed("pca")
    table = write_genes_by_cells(tmp_path / "z.tsv", counts_matrix(6, False, 3))
    store.ingest([table], IngestOptions(dataset_id="z", labels=["sensitive"], values="normalized"))
    with pytest.raises(InputError, match="normalized"):
        store.embed("pca", "z")
    with pytest.raises(InputError, match="counts and normalised"):
        store.embed("pca", "all", key="mixed")


def _done(path: Path) -> int:
    try:
        return int(zarr.open_group(path, mode="r")["done"][:].sum())
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def _embed_command(store: Path, key: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scdrugmap.cli",
        "--store",
        str(store),
        "embed",
        "--model",
        "pca",
        "--key",
        key,
        "--chunk-size",
        "4",
        "--json",
    ]


def test_killed_embed_resumes_to_the_identical_array(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path, n_datasets=1, cells_per_sample=150)
    target = store.embedding_path("pca", "ds0")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        _embed_command(store.path, "pca"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while _done(target) < 20 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _done(target)
    assert 0 < killed_at < 150, "the run was not interrupted part way"
    resumed = subprocess.run(
        _embed_command(store.path, "pca"), env=env, capture_output=True, text=True, check=True
    )
    summary = json.loads(resumed.stdout)
    assert summary["chunks_already_done"] >= killed_at
    assert summary["chunks_written"] == 150 - summary["chunks_already_done"]
    subprocess.run(
        _embed_command(store.path, "pca-uninterrupted"), env=env, check=True, capture_output=True
    )
    np.testing.assert_array_equal(
        store.embedding_array("pca", "ds0").read_all(),
        store.embedding_array("pca-uninterrupted", "ds0").read_all(),
    )
    np.testing.assert_array_equal(
        store.embedding_array("pca", "ds0").read_coverage(),
        store.embedding_array("pca-uninterrupted", "ds0").read_coverage(),
    )
    assert bool(store.embeddings().set_index("key").loc["pca", "complete"])

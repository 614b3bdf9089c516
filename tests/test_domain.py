"""The applicability domain of a predictor on real cells: held-out PC9 cells fall inside
a PC9 predictor's domain, SCAD's A375 melanoma cells outside it.

A shared space for the two needs shared genes and one kind of values. PC9 names genes by
symbol and holds Drop-seq counts; SCAD names them by Entrez ID and holds z-scored values,
and no embedder reads both as they are: the fitted baselines refuse to mix counts and
normalised values, and every checkpoint model (the `text` model too) needs counts. So
SCAD's genes are renamed to symbols (tests/data/scad/entrez_symbols.tsv) and PC9 is
written as normalised values on those genes (log1p of counts per 10^4, the `pca`
baseline's own transform), with the cells a QC would keep (200 or more genes: the median
barcode of the quarter has 81, and those are mostly empty droplets). The `pca` baseline
is fitted on the PC9 training cells only, as any predictor's embedding is, and SCAD is
projected into it through `predict` like any upload (it holds every panel gene).
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.spatial.distance import cdist

from scdrugmap import Store
from scdrugmap.cli import main
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.errors import InputError
from scdrugmap.predict.domain import OUTSIDE, build_domain, knn_mean_distance
from scdrugmap.predict.train import predictor_path, read_predictor_record
from tests.store_builders import scad_options

SPLIT_SEED = 20261203
HELD_OUT = 0.2
MIN_GENES = 200


def _split(n: int) -> np.ndarray:
    """Which cells are held out: a seeded fifth."""
    return np.random.default_rng(SPLIT_SEED).random(n) < HELD_OUT


@pytest.fixture(scope="module")
def counts_store(real_data: Path, tmp_path_factory) -> tuple[Store, list[Path]]:
    """PC9 as counts, four fifths of each sample fitting a pca + logreg predictor; the
    held-out fifth written as files of their own."""
    root = tmp_path_factory.mktemp("domain-counts")
    fitted, held = [], []
    for name in ("Day11_control", "Day11_Erlotinib"):
        table = pd.read_csv(real_data / "pc9_erlotinib" / f"{name}.txt.gz", sep="\t", index_col=0)
        out = _split(table.shape[1])
        fitted.append(root / f"{name}.txt.gz")
        held.append(root / f"{name}.held.txt.gz")
        table.loc[:, ~out].to_csv(fitted[-1], sep="\t")
        table.loc[:, out].to_csv(held[-1], sep="\t")
    store = Store(root / "store")
    store.ingest(
        fitted,
        IngestOptions("pc9", samples=["control", "erlotinib"], labels=["sensitive", "resistant"]),
    )
    store.embed("pca", "pc9")
    store.train_predictor("pca", "logreg", "pc9")
    return store, held


def _shared_space_tables(real_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PC9 (QC-kept cells, log1p CP10k on SCAD's genes, `response` 1 for control) and
    SCAD's PLX4720 table with symbols for its Entrez IDs; both cells as rows."""
    symbols = pd.read_csv(real_data / "scad" / "entrez_symbols.tsv", sep="\t", dtype=str)
    scad = pd.read_csv(real_data / "scad" / "PLX4720.tsv.gz", sep="\t", index_col=0)
    scad = scad.rename(columns=dict(zip(symbols["entrez_id"], symbols["symbol"], strict=True)))
    frames, responses = [], []
    for name, response in (("Day11_control", 1), ("Day11_Erlotinib", 0)):
        counts = pd.read_csv(
            real_data / "pc9_erlotinib" / f"{name}.txt.gz", sep="\t", index_col=0
        ).T
        counts = counts[(counts > 0).sum(axis=1) >= MIN_GENES]
        values = np.log1p(counts.div(counts.sum(axis=1), axis=0) * 1e4)
        frames.append(values.reindex(columns=symbols["symbol"]))
        responses += [response] * len(values)
    pc9 = pd.concat(frames).fillna(0.0)
    pc9 = pd.concat(
        [pd.Series(responses, pc9.index, name="response"), pc9.loc[:, pc9.gt(0).any()]], axis=1
    )
    return pc9, scad


@pytest.fixture(scope="module")
def shared(real_data: Path, tmp_path_factory) -> dict:
    """A store with PC9 (normalised, on SCAD's genes) fitting two predictors, the default
    domain quantile and 0.9; the held-out PC9 cells and SCAD as files to predict."""
    root = tmp_path_factory.mktemp("domain-shared")
    pc9, scad = _shared_space_tables(real_data)
    out = _split(len(pc9))
    files = {"fitted": root / "pc9.tsv", "held": root / "pc9_held.tsv", "scad": root / "a375.tsv"}
    pc9[~out].to_csv(files["fitted"], sep="\t")
    pc9[out].drop(columns="response").to_csv(files["held"], sep="\t")
    scad.drop(columns="response").to_csv(files["scad"], sep="\t")
    store = Store(root / "store")
    store.ingest([files["fitted"]], scad_options("pc9", "erlotinib"))
    store.embed("pca", "pc9")
    store.train_predictor("pca", "logreg", "pc9-default")
    store.train_predictor("pca", "logreg", "pc9-q90", domain_quantile=0.9)
    return {"store": store, "files": files, "root": root}


def _predict(store: Store, predictor: str, path: Path, dataset_id: str):
    return store.predict(predictor, [path], dataset_id=dataset_id, samples=[path.stem])


def test_held_out_pc9_cells_are_in_the_domain_of_a_pc9_predictor(counts_store) -> None:
    store, held = counts_store
    result = store.predict("pc9", held, dataset_id="held", samples=["control", "erlotinib"])
    called = result.cells[result.cells["call"] != "no call"]
    assert called["domain_score"].between(0, 100).all()
    fractions = result.samples.set_index("sample")["fraction_in_domain"]
    # Calibrated: cells like the training cells are inside at about the quantile (0.99).
    assert (fractions >= 0.95).all(), fractions
    assert (result.samples["domain_note"] == "").all()
    assert result.domain_quantile == 0.99


def test_scad_melanoma_cells_fall_outside_a_pc9_predictor(shared) -> None:
    store, files = shared["store"], shared["files"]
    held = _predict(store, "pc9-q90", files["held"], "held-q90")
    scad = _predict(store, "pc9-q90", files["scad"], "a375-q90")
    assert held.samples["fraction_in_domain"].iloc[0] >= 0.85
    assert held.samples["domain_note"].iloc[0] == ""
    assert scad.samples["fraction_in_domain"].iloc[0] < 0.5
    assert scad.samples["domain_note"].iloc[0] == OUTSIDE


def test_the_score_ranks_scad_beyond_nearly_every_training_cell(shared) -> None:
    """At the default 0.99 the line lies in the tail of PC9's own spread (its deepest
    cells are as far from the rest as A375 is), yet the score still tells them apart."""
    store, files = shared["store"], shared["files"]
    held = _predict(store, "pc9-default", files["held"], "held-default")
    scad = _predict(store, "pc9-default", files["scad"], "a375-default")
    assert held.cells["domain_score"].median() < 60
    assert scad.cells["domain_score"].median() > 90
    assert held.samples["fraction_in_domain"].iloc[0] >= 0.95


def test_the_index_is_plain_arrays_with_its_quantile_recorded(shared) -> None:
    store = shared["store"]
    record = read_predictor_record(store, "pc9-q90")
    assert record["domain"]["quantile"] == 0.9
    with np.load(predictor_path(store, "pc9-q90") / "domain.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)
        assert arrays["reference"].dtype == np.float32
        assert len(arrays["reference"]) == record["n_cells"] == record["domain"]["n_reference"]


def test_distances_are_the_exact_neighbours(shared) -> None:
    store = shared["store"]
    cells = store.cells("dataset_id = 'pc9'", columns=("dataset_id", "cell_index"))
    features = store.load_embedding("pca", cells)
    index = build_domain(features)
    points = index.project(features).astype(np.float64)
    full = cdist(points, points)
    np.fill_diagonal(full, np.inf)
    expected = np.sort(full, axis=1)[:, : index.k].mean(axis=1)
    left_out = knn_mean_distance(index.reference, index.reference, index.k, leave_one_out=True)
    np.testing.assert_allclose(np.sort(expected), index.calibration, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(left_out, expected, rtol=1e-4, atol=1e-4)
    # Small blocks give the same distances.
    blocked = knn_mean_distance(index.reference, index.reference, index.k, True, block_mib=1)
    np.testing.assert_array_equal(blocked, left_out)


def test_the_cli_marks_a_sample_outside_the_domain(shared, tmp_path: Path) -> None:
    store, files = shared["store"], shared["files"]
    base = ["--store", str(store.path), "predict", "--predictor", "pc9-q90", str(files["scad"])]
    outcome = CliRunner().invoke(main, [*base, "--dataset", "a375-json", "--json"])
    assert outcome.exit_code == 0, outcome.output
    answer = json.loads(outcome.output)
    assert answer["domain_quantile"] == 0.9
    assert answer["samples"][0]["domain_note"] == OUTSIDE
    out = tmp_path / "calls.csv"
    outcome = CliRunner().invoke(main, [*base, "--dataset", "a375-csv", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert f"sample a375-csv: {OUTSIDE}" in outcome.output
    cells = pd.read_csv(out)
    assert {"domain_score", "in_domain"} <= set(cells.columns)
    assert pd.read_csv(tmp_path / "calls.samples.csv")["domain_note"].iloc[0] == OUTSIDE
    h5ad = tmp_path / "calls.h5ad"
    outcome = CliRunner().invoke(main, [*base, "--dataset", "a375-h5ad", "--out", str(h5ad)])
    assert outcome.exit_code == 0, outcome.output
    adata = ad.read_h5ad(h5ad)
    assert adata.uns["domain_quantile"] == 0.9
    assert adata.uns["per_sample"]["domain_note"] == [OUTSIDE]
    assert adata.obs["in_domain"].mean() < 0.5


def test_a_quantile_outside_zero_to_one_is_refused(shared) -> None:
    store = shared["store"]
    with pytest.raises(InputError, match=r"--domain-quantile 1\.5"):
        store.train_predictor("pca", "logreg", "bad", domain_quantile=1.5)
    outcome = CliRunner().invoke(
        main,
        ["--store", str(store.path), "train", "--embedding", "pca", "--classifier", "logreg",
         "--name", "bad", "--domain-quantile", "0"],
    )  # fmt: skip
    assert outcome.exit_code == 2 and "--domain-quantile" in outcome.output

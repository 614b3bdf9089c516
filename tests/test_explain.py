"""`explain` on real PC9 cells: the genes ranked between a PCA predictor's resistant and
sensitive calls, checked against a dense rank computation of our own, the same under any
memory budget, and written by the CLI as a table and a volcano plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import sparse, stats

from scdrugmap import Store
from scdrugmap.cli import main
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.errors import InputError, StoreError
from scdrugmap.workflows.explain import explain, predictor_calls
from tests.store_builders import ingest_pc9, scad_options

PREDICTOR = "pc9-pca"
COLUMNS = [
    "gene",
    "group",
    "score",
    "logfoldchange",
    "pval",
    "pval_adj",
    "pct_resistant",
    "pct_sensitive",
]


@pytest.fixture(scope="module")
def store(real_data: Path, tmp_path_factory) -> Store:
    """The PC9 quarter, embedded with PCA, and a logreg predictor fitted on it."""
    store = Store(tmp_path_factory.mktemp("explain") / "store")
    ingest_pc9(store, real_data / "pc9_erlotinib", drug="erlotinib")
    # 500 variable genes rather than 2,000: the fit is far cheaper, the calls as real.
    store.embed("pca", n_components=10, n_top_genes=500)
    store.train_predictor("pca", "logreg", PREDICTOR)
    return store


@pytest.fixture(scope="module")
def calls(store: Store) -> pd.DataFrame:
    return predictor_calls(store, PREDICTOR, "pc9")[0]


def _failures(store: Store) -> int:
    return len(store.sql("SELECT * FROM failures WHERE key = 'pca' AND dataset_id = 'pc9'"))


def _by_gene(table: pd.DataFrame, group: str, genes: list[str]) -> pd.DataFrame:
    return table[table["group"] == group].set_index("gene").loc[genes]


def _log1p_cp10k(store: Store, kept: np.ndarray) -> sparse.csr_matrix:
    counts = store.reader("pc9").read_rows(0, 3650).astype(np.float64)[kept]
    totals = np.asarray(counts.sum(axis=1)).ravel()
    counts.data = np.log1p(counts.data / np.repeat(totals / 1e4, np.diff(counts.indptr)))
    return counts


def _dense_reference(store: Store, calls: pd.DataFrame) -> pd.DataFrame:
    """The resistant-vs-sensitive statistics from dense blocks of log1p CP10k values:
    scipy's rankdata and tiecorrect give the z-score and its normal two-sided p-value,
    checked against mannwhitneyu (asymptotic, no continuity correction) on a sample of
    genes, and scipy's Benjamini-Hochberg adjusts them. A gene no called cell expresses
    scores 0 with p 1, as in scanpy."""
    kept = (calls["call"] != "no call").to_numpy()
    resistant = (calls["call"] == "resistant").to_numpy()[kept]
    values = sparse.csc_matrix(_log1p_cp10k(store, kept))
    n, n1 = len(resistant), int(resistant.sum())
    n2 = n - n1
    n_genes = values.shape[1]
    reference = pd.DataFrame(
        0.0, index=range(n_genes), columns=["score", "logfoldchange", "pct_resistant",
                                            "pct_sensitive"]
    )  # fmt: skip
    expressed = np.flatnonzero(np.diff(values.indptr) > 0)
    for first in range(0, len(expressed), 2000):
        genes = expressed[first : first + 2000]
        dense = values[:, genes].toarray()
        ranks = stats.rankdata(dense, axis=0)
        ties = np.array([stats.tiecorrect(ranks[:, j]) for j in range(len(genes))])
        spread = np.sqrt(ties * n1 * n2 * (n + 1) / 12)
        means = dense[resistant].mean(axis=0), dense[~resistant].mean(axis=0)
        reference.loc[genes, "score"] = (ranks[resistant].sum(axis=0) - n1 * (n + 1) / 2) / spread
        reference.loc[genes, "logfoldchange"] = np.log2(
            (np.expm1(means[0]) + 1e-9) / (np.expm1(means[1]) + 1e-9)
        )
        reference.loc[genes, "pct_resistant"] = (dense[resistant] > 0).mean(axis=0)
        reference.loc[genes, "pct_sensitive"] = (dense[~resistant] > 0).mean(axis=0)
    reference["pval"] = 2 * stats.norm.sf(np.abs(reference["score"]))
    reference["pval_adj"] = stats.false_discovery_control(reference["pval"].to_numpy())
    sample = np.union1d(
        reference["score"].abs().nlargest(200).index,
        np.random.default_rng(0).choice(expressed, 300, replace=False),
    )
    dense = values[:, sample].toarray()
    tested = stats.mannwhitneyu(
        dense[resistant], dense[~resistant], axis=0, method="asymptotic", use_continuity=False
    )
    np.testing.assert_allclose(tested.pvalue, reference.loc[sample, "pval"], rtol=1e-9)
    reference.index = list(store.reader("pc9").var.index.astype(str))
    return reference


def test_explain_through_the_cli_writes_the_table_and_the_volcano(
    store: Store, calls: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "genes.csv"
    outcome = CliRunner().invoke(
        main,
        ["--store", str(store.path), "explain", "--predictor", PREDICTOR, "--dataset", "pc9",
         "--out", str(out), "--top", "5", "--json"],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    said = json.loads(outcome.output)
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == COLUMNS
    n_genes = store.reader("pc9").n_genes
    assert said["n_genes"] == n_genes and len(table) == 2 * n_genes
    for group in ("resistant", "sensitive"):
        rows = table[table["group"] == group]
        assert rows["score"].is_monotonic_decreasing and rows["gene"].is_unique
        assert [g["gene"] for g in said["top"][group]] == rows["gene"].head(5).tolist()
    # Cells with no call (those the embedding saw nothing of) are left out.
    assert said["n_no_call"] == _failures(store) > 0
    sizes = said["group_sizes"]
    assert sizes == {g: int((calls["call"] == g).sum()) for g in ("resistant", "sensitive")}
    assert sizes["resistant"] + sizes["sensitive"] + said["n_no_call"] == 3650
    png = tmp_path / "genes.volcano.png"
    assert said["files"] == [str(out), str(png), str(png.with_suffix(".svg"))]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in png.with_suffix(".svg").read_text()[:1000]


def test_the_statistics_equal_a_dense_rank_computation(store: Store, calls: pd.DataFrame) -> None:
    result = explain(store, PREDICTOR, "pc9")
    reference = _dense_reference(store, calls)
    genes = list(reference.index)
    mine = _by_gene(result.genes, "resistant", genes)
    for column in ("score", "logfoldchange", "pct_resistant", "pct_sensitive"):
        np.testing.assert_allclose(mine[column], reference[column], rtol=0, atol=1e-6)
    for column in ("pval", "pval_adj"):
        np.testing.assert_allclose(mine[column], reference[column], rtol=1e-6, atol=1e-300)
    assert (mine["pval_adj"] < 0.05).sum() > 20, "the calls differ in real genes"
    # The sensitive rows are the same test seen from the other side.
    other = _by_gene(result.genes, "sensitive", genes)
    np.testing.assert_allclose(other["score"], -mine["score"], atol=1e-9)
    np.testing.assert_allclose(other["logfoldchange"], -mine["logfoldchange"], atol=1e-9)
    np.testing.assert_allclose(other["pval"], mine["pval"], rtol=1e-12)


def test_a_tiny_memory_budget_streams_many_blocks_to_the_identical_table(
    store: Store,
) -> None:
    whole = explain(store, PREDICTOR, "pc9", memory_mb=1024)
    streamed = explain(store, PREDICTOR, "pc9", memory_mb=15)
    assert (whole.n_gene_blocks, whole.n_cell_chunks) == (1, 1)
    assert streamed.n_gene_blocks >= 5 and streamed.n_cell_chunks >= 10
    pd.testing.assert_frame_equal(whole.genes, streamed.genes, check_exact=True)


def test_too_small_a_budget_says_how_much_is_needed(store: Store) -> None:
    with pytest.raises(InputError, match=r"allow at least \d+ MiB"):
        explain(store, PREDICTOR, "pc9", memory_mb=1)


def test_a_data_set_without_the_embedding_is_embedded_as_the_predictor_was(
    store: Store, real_data: Path
) -> None:
    folder = real_data / "pc9_erlotinib"
    store.ingest(
        [folder / "Day11_control.txt.gz", folder / "Day11_Erlotinib.txt.gz"],
        IngestOptions("pc9-unlabelled", samples=["control", "erlotinib"]),
    )
    result = explain(store, PREDICTOR, "pc9-unlabelled")
    assert "embedded now as 'pca'" in result.calls_from
    embedded = store.embeddings().query("key == 'pca' and dataset_id == 'pc9-unlabelled'")
    assert bool(embedded["complete"].iloc[0])
    # The same cells, the same embedding fit: the same calls and the same genes.
    again = explain(store, PREDICTOR, "pc9-unlabelled")
    assert "stored 'pca' embedding" in again.calls_from
    same = explain(store, PREDICTOR, "pc9")
    pd.testing.assert_frame_equal(again.genes, same.genes, check_exact=True)


def test_the_calls_are_those_predict_gives_the_same_cells(
    store: Store, calls: pd.DataFrame, real_data: Path
) -> None:
    folder = real_data / "pc9_erlotinib"
    predicted = store.predict(
        PREDICTOR,
        [folder / "Day11_control.txt.gz", folder / "Day11_Erlotinib.txt.gz"],
        samples=["control", "erlotinib"],
    )
    assert predicted.cells["call"].tolist() == calls["call"].tolist()
    assert {"resistant", "sensitive", "no call"} == set(calls["call"])


def test_calls_kept_elsewhere_are_ranked_as_given(store: Store, calls: pd.DataFrame) -> None:
    """A finished job's calls (the page's panel) give the same genes as the predictor's."""
    given = explain(store, PREDICTOR, "pc9", calls=calls.loc[:, ["barcode", "call"]])
    assert given.calls_from == "the calls given"
    pd.testing.assert_frame_equal(given.genes, explain(store, PREDICTOR, "pc9").genes)


def test_calls_with_one_group_empty_are_a_clear_error(store: Store, calls: pd.DataFrame) -> None:
    all_resistant = calls.assign(call="resistant")
    with pytest.raises(InputError, match=r"called 3650 resistant, 0 sensitive and 0 no call"):
        explain(store, PREDICTOR, "pc9", calls=all_resistant)
    one_sensitive = all_resistant.copy()
    one_sensitive.loc[0, "call"] = "sensitive"
    with pytest.raises(InputError, match=r"too few sensitive ones"):
        explain(store, PREDICTOR, "pc9", calls=one_sensitive)


def test_calls_given_must_be_the_data_sets_own(store: Store, calls: pd.DataFrame) -> None:
    with pytest.raises(StoreError, match=r"not those of data set 'pc9'"):
        explain(store, PREDICTOR, "pc9", calls=calls.iloc[1:])


def test_a_data_set_of_normalised_values_is_refused(store: Store, real_data: Path) -> None:
    store.ingest([real_data / "scad" / "PLX4720.tsv.gz"], scad_options("plx4720", "PLX4720"))
    with pytest.raises(InputError, match=r"'plx4720' holds normalized values.*raw counts"):
        explain(store, PREDICTOR, "plx4720")

"""The authors' data-set filters (scBERT's 200 panel genes, UCE's --filter) on real PC9
cells: which genes and cells they drop, checked against scanpy's rules written out here
with plain numpy, and how the dropped cells reach `failures` and leave the classifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from scdrugmap import Store
from scdrugmap.classify.selection import failed_cells
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.cell_filters import CellFilter, screen, without_filtered_genes
from scdrugmap.store.dataset_zarr import DatasetReader
from tests.data_files import top_expressed_genes, write_sample
from tests.performer_checkpoint import SHAPE
from tests.scbert_checkpoint import write_scbert_checkpoint

UCE_FILTER = CellFilter(min_genes=25, min_cells_per_gene=10, source="test")


def _thinned(counts: sparse.csr_matrix, rows: list[int], keep: int) -> sparse.csr_matrix:
    """Real cells with only their first `keep` expressed genes left (the filters' edge)."""
    lil = counts.tolil(copy=True)
    for row in rows:
        genes = np.flatnonzero(lil[row].toarray().ravel())
        for gene in genes[keep:]:
            lil[row, gene] = 0
    return sparse.csr_matrix(lil)


@pytest.fixture(scope="module")
def cells(pc9_control: SourceTable) -> sparse.csr_matrix:
    counts = pc9_control.counts[:60].tocsr()
    return _thinned(_thinned(counts, [3, 17], keep=24), [30], keep=25)


@pytest.fixture(scope="module")
def reader(tmp_path_factory, pc9_control: SourceTable, cells) -> DatasetReader:
    folder = tmp_path_factory.mktemp("filters")
    store = Store(folder / "store")
    sample = write_sample(folder / "a.tsv", cells, pc9_control.genes, "a")
    store.ingest([sample], IngestOptions("pc9", samples=["a"], labels=["sensitive"]))
    return store.reader("pc9")


def test_uce_filter_follows_scanpys_gene_then_cell_rule(reader, cells) -> None:
    """filter_genes(min_cells=10) on all genes, then filter_cells(min_genes=25)."""
    screened = screen(UCE_FILTER, reader, np.ones(cells.shape[1], dtype=bool))
    cells_per_gene = np.asarray((cells > 0).sum(axis=0)).ravel()
    np.testing.assert_array_equal(screened.gene_mask, cells_per_gene >= 10)
    genes_left = np.asarray((cells[:, cells_per_gene >= 10] > 0).sum(axis=1)).ravel()
    np.testing.assert_array_equal(screened.dropped, np.flatnonzero(genes_left < 25))
    assert {3, 17} <= set(screened.dropped.tolist())
    assert "fewer than 25 expressed genes expressed in at least 10 cells" in screened.reason


def test_masked_genes_are_gone_from_every_cell(reader, cells) -> None:
    screened = screen(UCE_FILTER, reader, np.ones(cells.shape[1], dtype=bool))
    kept = without_filtered_genes(reader.read_rows(0, 60), screened.gene_mask)
    assert not kept[:, ~screened.gene_mask].count_nonzero()
    np.testing.assert_array_equal(
        kept[:, screened.gene_mask].toarray(), cells[:, screened.gene_mask].toarray()
    )


def test_scbert_counts_panel_genes_only(reader, cells, pc9_control: SourceTable) -> None:
    panel = set(top_expressed_genes(pc9_control, 2000))
    known = np.array([g in panel for g in reader.gene_ids])
    screened = screen(CellFilter(min_genes=200, known_genes_only=True), reader, known)
    panel_genes = np.asarray((cells[:, known] > 0).sum(axis=1)).ravel()
    assert screened.gene_mask is None
    np.testing.assert_array_equal(screened.dropped, np.flatnonzero(panel_genes < 200))
    assert 0 < len(screened.dropped) < 60


def test_scbert_store_lists_filtered_cells_and_classifiers_leave_them_out(
    tmp_path: Path, pc9_control: SourceTable
) -> None:
    """The authors' default (200 panel genes) against `min_genes=0` on the same cells."""
    panel = top_expressed_genes(pc9_control, 2000)
    checkpoint = write_scbert_checkpoint(tmp_path / "model", panel)
    counts = _thinned(pc9_control.counts[:8].tocsr(), [2, 5], keep=150)
    store = Store(tmp_path / "store")
    files = [
        write_sample(tmp_path / "a.tsv", counts[:4], pc9_control.genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[4:], pc9_control.genes, "b"),
    ]
    store.ingest(files, IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"]))
    summary = store.embed("scbert", checkpoint=checkpoint, device="cpu", min_coverage=0, **SHAPE)
    in_panel = np.isin(pc9_control.genes, panel)
    expected = np.flatnonzero(np.asarray((counts[:, in_panel] > 0).sum(axis=1)).ravel() < 200)
    assert {2, 5} <= set(expected.tolist())
    assert summary.filtered == len(expected) and summary.failures == 0
    failures = store.query("SELECT cell_index, reason FROM failures WHERE key = 'scbert'")
    np.testing.assert_array_equal(np.sort(failures["cell_index"].to_numpy()), expected)
    assert failures["reason"].str.contains("scBERT's preprocess.py").all()
    assert set(failed_cells(store, "scbert").cells["cell_index"]) == set(expected.tolist())
    every = store.embed(
        "scbert",
        key="scbert-all",
        checkpoint=checkpoint,
        device="cpu",
        min_coverage=0,
        min_genes=0,
        **SHAPE,
    )
    assert every.filtered == 0
    np.testing.assert_allclose(
        store.embedding_array("scbert-all", "pc9").read_all(),
        store.embedding_array("scbert", "pc9").read_all(),
        atol=1e-6,
    )

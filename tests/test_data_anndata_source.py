"""prepare_anndata: an AnnData in memory prepared exactly as the same cells in a file,
without touching the caller's matrix; and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scdrugmap.data.anndata_source import prepare_anndata
from scdrugmap.data.prepare import IngestOptions, prepare_dataset
from scdrugmap.data.readers import SourceTable
from scdrugmap.errors import InputError
from tests.data_files import write_sample

ROWS = np.r_[0:60, 1400:1500]


@pytest.fixture(scope="module")
def cells(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str], list[str]]:
    """160 real PC9 control cells: counts, gene symbols, barcodes."""
    counts = pc9_control.counts[ROWS]
    return counts, pc9_control.genes, [f"pc9-{i}" for i in range(len(ROWS))]


def _anndata(counts, genes: list[str], barcodes: list[str]) -> ad.AnnData:
    return ad.AnnData(X=counts, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=genes))


def test_equals_the_same_cells_read_from_a_file(cells, tmp_path: Path) -> None:
    counts, genes, barcodes = cells
    path = write_sample(tmp_path / "pc9.tsv", counts, genes, "pc9-")
    from_file = prepare_dataset([path], IngestOptions("pc9"))
    from_memory = prepare_anndata(_anndata(counts, genes, barcodes), "pc9")
    assert (from_memory.counts != from_file.counts).nnz == 0
    assert from_memory.counts.has_sorted_indices
    pd.testing.assert_frame_equal(from_memory.var, from_file.var)
    columns = ["barcode", "sample", "label", "n_counts", "n_genes"]
    pd.testing.assert_frame_equal(from_memory.obs[columns], from_file.obs[columns])
    assert from_memory.metadata["gene_ids"] == from_file.metadata["gene_ids"]
    assert from_memory.metadata["gene_ids"]["dominant"] == "symbol"


def test_the_callers_matrix_is_not_modified(cells) -> None:
    """A float32 CSR matrix is not copied on the way in, so merging must not sort or
    prune the caller's arrays in place (rows with unsorted indices and stored zeros)."""
    counts, genes, barcodes = cells
    matrix = counts.astype(np.float32).tocsr()
    for row in range(matrix.shape[0]):  # each row's entries reversed: unsorted indices
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        matrix.indices[lo:hi] = matrix.indices[lo:hi][::-1].copy()
        matrix.data[lo:hi] = matrix.data[lo:hi][::-1].copy()
    matrix.data[0] = 0  # a stored zero
    matrix.has_sorted_indices = False
    before = (matrix.data.copy(), matrix.indices.copy(), matrix.indptr.copy())
    prepared = prepare_anndata(_anndata(matrix, genes, barcodes), "pc9")
    for array, kept in zip((matrix.data, matrix.indices, matrix.indptr), before):
        np.testing.assert_array_equal(array, kept)
    expected = matrix.copy()
    expected.eliminate_zeros()
    assert (prepared.counts != expected).nnz == 0 and prepared.counts.has_sorted_indices


def test_layer_gene_column_and_sample_column(cells) -> None:
    counts, genes, barcodes = cells
    adata = _anndata(np.log1p(counts.toarray()), [f"g{i}" for i in range(len(genes))], barcodes)
    adata.layers["counts"] = counts
    adata.var["symbol"] = genes
    adata.obs["batch"] = np.where(np.arange(len(barcodes)) < 60, "early", "late")
    prepared = prepare_anndata(
        adata, "pc9", layer="counts", gene_column="symbol", sample_column="batch"
    )
    assert (prepared.counts != counts).nnz == 0
    assert prepared.var.index.tolist() == genes
    assert prepared.obs["sample"].tolist() == adata.obs["batch"].tolist()
    assert prepared.metadata["source_files"] == ["adata.layers['counts']"]


def test_normalised_values_are_refused_naming_the_layer_to_use(cells) -> None:
    counts, genes, barcodes = cells
    adata = _anndata(sparse.csr_matrix(np.log1p(counts.toarray())), genes, barcodes)
    with pytest.raises(InputError, match=r"^adata\.X: non-integer values.*layer=") as caught:
        prepare_anndata(adata, "pc9")
    assert "\n" not in str(caught.value) and "--values" not in str(caught.value)


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (lambda a: a.to_df(), {}, "expected an AnnData, got DataFrame"),
        (lambda a: a[:0], {}, r"the AnnData is empty \(0 cells"),
        (lambda a: a[:, :0], {}, r"the AnnData is empty \(160 cells x 0 genes\)"),
        (lambda a: a, {"layer": "counts"}, r"adata.layers has no 'counts' \(layers: none\)"),
        (lambda a: a, {"gene_column": "symbol"}, "adata.var has no column 'symbol'"),
        (lambda a: a, {"sample_column": "batch"}, "adata.obs has no column 'batch'"),
    ],
)
def test_bad_input_gets_one_line(cells, make, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        prepare_anndata(make(_anndata(*cells)), "pc9", **options)
    assert "\n" not in str(caught.value)

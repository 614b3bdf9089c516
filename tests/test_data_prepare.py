"""prepare_dataset: real data sets, merging files, labels and samples, and every bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scdrugmap.data.prepare import IngestOptions, PreparedDataset, prepare_dataset
from scdrugmap.errors import InputError
from tests.data_files import (
    cell_names,
    random_counts,
    symbols,
    write_cells_by_genes,
    write_genes_by_cells,
    write_h5ad,
    write_text,
)

SCAD = {"values": "normalized", "label_column": "response"}
SCAD_LABELS = {"sensitive_values": ["1"], "resistant_values": ["0"]}


def assert_canonical(prepared: PreparedDataset) -> None:
    counts = prepared.counts
    assert counts.dtype == np.float32 and counts.has_canonical_format
    assert not np.any(counts.data == 0)
    assert counts.shape == (len(prepared.obs), len(prepared.var))
    assert prepared.obs.index.is_unique and prepared.var.index.is_unique
    np.testing.assert_allclose(prepared.obs["n_counts"], np.asarray(counts.sum(axis=1)).ravel())
    np.testing.assert_array_equal(prepared.obs["n_genes"], np.diff(counts.indptr))


# --- real data -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pc9(real_data: Path) -> PreparedDataset:
    folder = real_data / "pc9_erlotinib"
    files = [folder / "Day11_control.txt.gz", folder / "Day11_Erlotinib.txt.gz"]
    options = IngestOptions(
        "pc9", samples=["control", "erlotinib"], labels=["sensitive", "resistant"]
    )
    return prepare_dataset(files, options)


def test_pc9_is_one_data_set_of_two_samples(pc9: PreparedDataset) -> None:
    assert pc9.counts.shape == (3_650, 25_077)  # genes: the union of 22,015 and 21,207
    assert pc9.obs["label"].value_counts().to_dict() == {"resistant": 2150, "sensitive": 1500}
    assert pc9.obs["sample"].value_counts().to_dict() == {"erlotinib": 2150, "control": 1500}
    assert pc9.metadata["source_files"] == ["Day11_control.txt.gz", "Day11_Erlotinib.txt.gz"]
    assert pc9.metadata["gene_ids"]["dominant"] == "symbol"
    assert_canonical(pc9)


def test_pc9_barcodes_are_prefixed_because_one_collides(pc9: PreparedDataset) -> None:
    assert pc9.metadata["barcode_prefixed"] is True
    obs = pc9.obs
    assert (obs.index == obs["barcode"]).all()
    raw = [b.removeprefix(f"{s}_") for b, s in zip(obs["barcode"], obs["sample"])]
    assert len(raw) - len(set(raw)) == 1


def test_pc9_values_are_the_files_values(pc9: PreparedDataset, real_data: Path) -> None:
    path = real_data / "pc9_erlotinib" / "Day11_control.txt.gz"
    expected = pd.read_csv(path, sep="\t", index_col=0, nrows=300)
    cells = pc9.obs.index.get_indexer("control_" + expected.columns)
    genes = pc9.var.index.get_indexer(expected.index)
    np.testing.assert_array_equal(pc9.counts[cells][:, genes].toarray(), expected.to_numpy().T)
    assert pc9.obs["n_counts"].sum() > 0


@pytest.mark.parametrize(("drug", "n_cells"), [("PLX4720", 108), ("Afatinib", 120)])
def test_scad_normalised_tables(real_data: Path, drug: str, n_cells: int) -> None:
    path = real_data / "scad" / f"{drug}.tsv.gz"
    prepared = prepare_dataset([path], IngestOptions(drug.lower(), **SCAD, **SCAD_LABELS))
    assert prepared.counts.shape[0] == n_cells
    assert prepared.metadata["gene_ids"]["dominant"] == "entrez"
    assert prepared.metadata["values"] == "normalized"
    labels = prepared.obs["label"]
    assert set(labels) == {"sensitive", "resistant"}
    assert ((labels == "sensitive") == (prepared.obs["response"] == "1")).all()
    assert (prepared.obs["sample"] == drug.lower()).all()
    assert (prepared.counts.data < 0).any()
    assert_canonical(prepared)


def test_scad_is_not_counts(real_data: Path) -> None:
    path = real_data / "scad" / "PLX4720.tsv.gz"
    options = IngestOptions("plx", label_column="response", **SCAD_LABELS)
    with pytest.raises(InputError, match="--values normalized"):
        prepare_dataset([path], options)


# --- merging, labels, samples --------------------------------------------------------------


def test_files_merge_on_the_union_of_genes(tmp_path: Path) -> None:
    a, b = random_counts(12, 10, seed=1), random_counts(9, 8, seed=2)
    genes_a, genes_b = symbols(10), [f"GENE{i}" for i in (12, 5, 11, 3, 0, 13, 9, 14)]
    cells_a, cells_b = cell_names(12), cell_names(9)
    files = [
        write_genes_by_cells(tmp_path / "pre.tsv", a, genes_a, cells_a),
        write_cells_by_genes(tmp_path / "post.csv.gz", b, genes_b, cells_b, sep=","),
    ]
    prepared = prepare_dataset(files, IngestOptions("merged", labels=["sensitive", "resistant"]))
    union = [*genes_a, "GENE12", "GENE11", "GENE13", "GENE14"]
    assert prepared.var.index.tolist() == union
    dense = prepared.counts.toarray()
    np.testing.assert_array_equal(dense[:12, :10], a)
    np.testing.assert_array_equal(dense[:12, 10:], 0)
    np.testing.assert_array_equal(dense[12:][:, [union.index(g) for g in genes_b]], b)
    assert prepared.obs["sample"].tolist() == ["pre"] * 12 + ["post"] * 9
    assert prepared.obs["source_file"].tolist() == ["pre.tsv"] * 12 + ["post.csv.gz"] * 9
    assert prepared.obs["barcode"].tolist() == cells_a + cells_b
    assert prepared.metadata["barcode_prefixed"] is False
    assert prepared.var["id_type"].eq("symbol").all()
    assert_canonical(prepared)


def test_label_and_sample_columns(tmp_path: Path) -> None:
    n = 30
    counts, genes, cells = random_counts(n, 12), symbols(12), cell_names(n)
    obs = {
        "response": ["S" if i % 3 else "R" for i in range(n)],
        "sample": [f"patient{i % 2}" for i in range(n)],
        "label": ["x"] * n,  # the file's own 'label' column: kept as orig_label
        "dose": np.linspace(0, 1, n),
    }
    path = write_h5ad(tmp_path / "a.h5ad", counts, genes, cells, obs)
    options = IngestOptions(
        "cols",
        label_column="response",
        sensitive_values=["S"],
        resistant_values=["R"],
        sample_column="sample",
        drug="erlotinib",
        meta={"source": "test"},
    )
    prepared = prepare_dataset([path], options)
    expected = ["sensitive" if v == "S" else "resistant" for v in obs["response"]]
    assert prepared.obs["label"].tolist() == expected
    assert prepared.obs["sample"].tolist() == obs["sample"]
    extra = ["response", "orig_label", "dose"]
    computed = ["barcode", "sample", "label", "n_counts", "n_genes", "source_file"]
    assert prepared.obs.columns.tolist() == [*computed, *extra]
    assert all(isinstance(v, str) for c in extra for v in prepared.obs[c])
    assert prepared.metadata["drug"] == "erlotinib" and prepared.metadata["meta"] == {
        "source": "test"
    }


def test_numeric_label_column_and_unlabelled_data(tmp_path: Path) -> None:
    counts, genes, cells = random_counts(8, 6), symbols(6), cell_names(8)
    obs = {"response": [1.0, 0.0] * 4}
    path = write_h5ad(tmp_path / "a.h5ad", counts, genes, cells, obs)
    options = IngestOptions("num", label_column="response", **SCAD_LABELS)
    assert prepare_dataset([path], options).obs["label"].tolist() == ["sensitive", "resistant"] * 4
    unlabelled = prepare_dataset([path], IngestOptions("new"))
    assert set(unlabelled.obs["label"]) == {"unknown"}
    assert set(unlabelled.obs["sample"]) == {"new"}


def test_shared_barcodes_are_prefixed_with_the_sample(tmp_path: Path) -> None:
    cells = cell_names(5)
    files = [
        write_genes_by_cells(tmp_path / f"{s}.tsv", random_counts(5, 4, seed=i), symbols(4), cells)
        for i, s in enumerate(["d0", "d7"])
    ]
    options = IngestOptions("prefixed", labels=["resistant", "resistant"])
    prepared = prepare_dataset(files, options)
    assert prepared.metadata["barcode_prefixed"] is True
    assert prepared.obs.index.tolist() == [f"d0_{c}" for c in cells] + [f"d7_{c}" for c in cells]
    assert set(prepared.obs["label"]) == {"resistant"}


def test_prepare_writes_nothing(tmp_path: Path) -> None:
    path = write_genes_by_cells(tmp_path / "a.tsv", random_counts(5, 4), symbols(4), cell_names(5))
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    prepare_dataset([path], IngestOptions("pure"))
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


# --- bad input -----------------------------------------------------------------------------


def _fails(files: list[Path], fragment: str, **options) -> str:
    options.setdefault("dataset_id", "bad")
    with pytest.raises(InputError, match=fragment) as info:
        prepare_dataset(files, IngestOptions(**options))
    assert "\n" not in str(info.value)
    return str(info.value)


def _table(tmp_path: Path, rows: list[str], name: str = "t.tsv") -> Path:
    return write_text(tmp_path / name, "\n".join(rows) + "\n")


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    _fails([tmp_path / "missing.tsv"], "no such file")
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(gzip.compress(b"GENE\tc1\nTP53\t1\n" * 50)[:30])
    _fails([broken], "cannot read")
    _fails([write_text(tmp_path / "empty.tsv", "")], "the file is empty")
    _fails([_table(tmp_path, ["GENE\tc1\tc2"], "h1.tsv")], "holds no genes")
    _fails([_table(tmp_path, ["cell\tTP53\tEGFR"], "h2.tsv")], "holds no cells")
    _fails([_table(tmp_path, ["GENE", "TP53", "EGFR"], "h3.tsv")], "holds no cells")


def test_bad_values(tmp_path: Path) -> None:
    head = "GENE\tc1\tc2"
    message = _fails([_table(tmp_path, [head, "TP53\t1\tabc"])], "non-numeric value 'abc'")
    assert "row 'TP53'" in message
    _fails([_table(tmp_path, [head, "TP53\t1\tNA"])], r"missing or infinite values \(NaN/inf\)")
    _fails([_table(tmp_path, [head, "TP53\t1\t"])], "NaN")
    _fails([_table(tmp_path, [head, "TP53\t1\tinf"])], "NaN/inf", values="normalized")
    message = _fails([_table(tmp_path, [head, "TP53\t1\t-2"])], "negative values")
    assert "cell 'c2', gene 'TP53'" in message and "--values normalized" in message
    _fails([_table(tmp_path, [head, "TP53\t1\t0.5"])], "non-integer values.*--values normalized")
    _fails([_table(tmp_path, [head, "TP53\t0\t0"])], "every value is zero")
    ok = prepare_dataset(
        [_table(tmp_path, [head, "TP53\t1\t-0.5", "EGFR\t0\t2"])],
        IngestOptions("z", values="normalized"),
    )
    assert ok.counts.toarray().tolist() == [[1.0, 0.0], [-0.5, 2.0]]


def test_a_one_gene_table_is_refused(tmp_path: Path) -> None:
    head = "GENE\tc1\tc2"
    _fails([_table(tmp_path, [head, "TP53\t1\t3"])], "holds 1 gene, fewer than the 2")


def test_duplicate_names(tmp_path: Path) -> None:
    message = _fails([_table(tmp_path, ["GENE\tc1", "TP53\t1", "TP53\t2"])], "duplicated gene name")
    assert "'TP53'" in message
    _fails(
        [_table(tmp_path, ["GENE\tc1\tc1", "TP53\t1\t2"])],
        r"duplicated barcodes \(1 of them, e.g. 'c1'\)",
    )


def test_gene_names_that_are_not_genes(tmp_path: Path) -> None:
    # Barcodes where the genes should be: read the wrong way round.
    rows = ["\tAAACCTGAGAAACCAT\tAAACCTGAGAAACCGC", "c1\t1\t0", "c2\t0\t2"]
    _fails([_table(tmp_path, rows)], "none of the 2 gene names", orientation="cells-by-genes")


def test_label_column_errors(tmp_path: Path) -> None:
    cells = cell_names(4)
    obs = {"response": ["1", "0", "2", "1"], "Condition": ["a"] * 4}
    path = write_cells_by_genes(tmp_path / "l.tsv", random_counts(4, 3), symbols(3), cells, obs)
    message = _fails([path], "no column 'status'", label_column="status", **SCAD_LABELS)
    assert "'response', 'Condition'" in message
    _fails([path], "column 'response' holds values mapped to no label: '2'", **SCAD, **SCAD_LABELS)
    _fails([path], "no column 'donor' for --sample-column", sample_column="donor")


def test_option_errors(tmp_path: Path) -> None:
    path = write_genes_by_cells(tmp_path / "a.tsv", random_counts(3, 3), symbols(3), cell_names(3))
    for bad_id in ["", "has space", "-lead", "x" * 65, "a/b"]:
        _fails([path], "not a valid data set id", dataset_id=bad_id)
    _fails([path, path], "--label given 3 times for 2 files", labels=["sensitive"] * 3)
    _fails([path], "unknown label", labels=["cured"])
    _fails([path], "not both", labels=["sensitive"], label_column="response", **SCAD_LABELS)
    _fails([path], "--sensitive and --resistant", label_column="response")
    _fails([path], "need --label-column", sensitive_values=["1"])
    _fails(
        [path], "both list '1'", label_column="r", sensitive_values=["1"], resistant_values=["1"]
    )
    _fails([path, path], "--sample given 1 times for 2 files", samples=["a"])
    _fails([path], "unknown orientation", orientation="sideways")
    _fails([path], "unknown value kind", values="tpm")
    _fails([], "no input files")
    _fails([path, path], "repeat across files even after prefixing", samples=["a", "a"])

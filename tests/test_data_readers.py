"""read_matrix_file: every format round-trips the exact values; bad files fail in one line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scdrugmap.data import delimited, textscan
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.errors import InputError
from tests.data_files import (
    cell_names,
    random_counts,
    symbols,
    write_10x_dir,
    write_10x_h5,
    write_cells_by_genes,
    write_genes_by_cells,
    write_h5ad,
    write_text,
)

N_CELLS, N_GENES = 37, 23


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    return random_counts(N_CELLS, N_GENES)


@pytest.fixture(scope="module")
def genes() -> list[str]:
    return symbols(N_GENES)


@pytest.fixture(scope="module")
def barcodes() -> list[str]:
    return cell_names(N_CELLS)


def assert_table(table, counts: np.ndarray, genes: list[str], barcodes: list[str]) -> None:
    assert table.genes == genes
    assert table.barcodes == barcodes
    assert table.counts.dtype == np.float32
    assert table.counts.shape == (len(barcodes), len(genes))
    np.testing.assert_array_equal(table.counts.toarray(), counts)
    assert list(table.obs.index) == barcodes


# --- formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.tsv", "t.tsv.gz", "t.txt", "t.csv", "t.csv.gz"])
def test_genes_by_cells_table(tmp_path, counts, genes, barcodes, name) -> None:
    sep = "," if ".csv" in name else "\t"
    path = write_genes_by_cells(tmp_path / name, counts, genes, barcodes, sep=sep)
    table = read_matrix_file(path)
    assert_table(table, counts, genes, barcodes)
    assert table.obs.empty


@pytest.mark.parametrize("name", ["t.tsv", "t.csv.gz"])
def test_cells_by_genes_table_with_metadata(tmp_path, counts, genes, barcodes, name) -> None:
    obs = {
        "response": [i % 2 for i in range(N_CELLS)],
        "Condition": ["pre" if i % 2 else "post" for i in range(N_CELLS)],
        "cell_state": ["cycling" if i % 3 else "G1" for i in range(N_CELLS)],  # text: metadata
    }
    sep = "," if ".csv" in name else "\t"
    path = write_cells_by_genes(tmp_path / name, counts, genes, barcodes, obs, sep=sep)
    table = read_matrix_file(path)
    assert_table(table, counts, genes, barcodes)
    assert list(table.obs.columns) == ["response", "Condition", "cell_state"]
    assert table.obs["response"].tolist() == [str(v) for v in obs["response"]]
    assert table.obs["cell_state"].tolist() == obs["cell_state"]


def test_normalised_values_round_trip(tmp_path, genes, barcodes) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(N_CELLS, N_GENES)).astype(np.float32)
    values[values > 1] = 0
    path = write_cells_by_genes(tmp_path / "z.tsv", values, genes, barcodes, {"label": ["a"] * 37})
    assert_table(read_matrix_file(path), values, genes, barcodes)


def test_explicit_orientation_overrides_detection(tmp_path, counts, genes, barcodes) -> None:
    # Gene names in the header and cell names in the first column, without any hint:
    # asked for explicitly, the reader does not second-guess.
    path = write_cells_by_genes(tmp_path / "t.tsv", counts, genes, barcodes)
    table = read_matrix_file(path, "genes-by-cells")
    assert table.genes == barcodes
    np.testing.assert_array_equal(table.counts.toarray(), counts.T)
    assert_table(read_matrix_file(path, "cells-by-genes"), counts, genes, barcodes)


def test_r_style_header_and_quotes_and_crlf(tmp_path, counts, genes, barcodes) -> None:
    # write.table: no header cell above the row names, quoted names, Windows line ends.
    header = "\t".join(f'"{b}"' for b in barcodes)
    rows = [f'"{g}"\t' + "\t".join(f"{v:g}" for v in col) for g, col in zip(genes, counts.T)]
    path = write_text(tmp_path / "r.txt", "\r\n".join([header, *rows]) + "\r\n")
    assert_table(read_matrix_file(path), counts, genes, barcodes)


def test_last_line_without_newline(tmp_path, counts, genes, barcodes) -> None:
    path = write_genes_by_cells(tmp_path / "t.tsv", counts, genes, barcodes)
    path.write_text(path.read_text().rstrip("\n"))
    assert_table(read_matrix_file(path), counts, genes, barcodes)


def test_pandas_fallback_reads_the_same_values(tmp_path, counts, genes, barcodes) -> None:
    # Quoted numbers and an empty metadata field are outside the fast scanner's simple form.
    header = "\t".join(["", "sample", *genes])
    rows = [
        "\t".join([b, "" if i == 3 else "s1", *(f'"{v:g}"' for v in row)])
        for i, (b, row) in enumerate(zip(barcodes, counts))
    ]
    path = write_text(tmp_path / "q.tsv", "\n".join([header, *rows]) + "\n")
    table = read_matrix_file(path)
    assert_table(table, counts, genes, barcodes)
    assert table.obs["sample"].tolist() == ["" if i == 3 else "s1" for i in range(N_CELLS)]


def test_scanner_matches_pandas_on_random_tables(tmp_path) -> None:
    rng = np.random.default_rng(7)
    for trial in range(5):
        n_rows, n_cols = rng.integers(1, 60, size=2)
        values = rng.choice([0, 0, 0, 1, 10, 100, 3, 0.5, -2, 1e-3, 250000], (n_rows, n_cols))
        frame = pd.DataFrame(values, index=[f"G{i}" for i in range(n_rows)])
        path = write_text(tmp_path / f"r{trial}.tsv", frame.to_csv(sep="\t"))
        with delimited.open_binary(path) as stream:
            stream.readline()
            scanned = textscan.scan_numeric_table(stream, "\t", n_cols + 1, [0])
        assert scanned is not None
        dense = np.zeros((n_rows, n_cols + 1), dtype=np.float32)
        dense[scanned.lines, scanned.columns] = scanned.values
        np.testing.assert_array_equal(dense[:, 1:], values.astype(np.float32))
        assert scanned.strings[0].tolist() == list(frame.index)


def test_scanner_declines_ragged_lines(tmp_path) -> None:
    path = write_text(tmp_path / "r.tsv", "g\ta\tb\nx\t1\t0\ny\t0\nz\t0\t0\t5\n")
    with delimited.open_binary(path) as stream:
        stream.readline()
        assert textscan.scan_numeric_table(stream, "\t", 3, [0]) is None


def test_h5ad_uses_counts_layer_and_keeps_obs(tmp_path, counts, genes, barcodes) -> None:
    obs = {"response": ["sensitive"] * N_CELLS, "sample": ["s1"] * N_CELLS}
    normalised = np.log1p(counts)
    path = write_h5ad(tmp_path / "a.h5ad", counts, genes, barcodes, obs, x=normalised)
    table = read_matrix_file(path)
    assert_table(table, counts, genes, barcodes)
    assert table.obs["response"].tolist() == obs["response"]
    plain = write_h5ad(tmp_path / "b.h5ad", counts, genes, barcodes)
    assert_table(read_matrix_file(plain), counts, genes, barcodes)


def test_10x_directory_v3_gzipped(tmp_path, counts, genes, barcodes) -> None:
    ids = [f"ENSG{i:011d}" for i in range(N_GENES)]
    extra = np.vstack([counts.T, np.ones((1, N_CELLS))]).T  # plus an antibody feature
    types = ["Gene Expression"] * N_GENES + ["Antibody Capture"]
    folder = write_10x_dir(
        tmp_path / "tenx", extra, [*ids, "CD3"], [*genes, "CD3"], barcodes, types
    )
    assert_table(read_matrix_file(folder), counts, genes, barcodes)
    # A matrix file given instead of its directory, and GEO-style prefixed names.
    prefixed = write_10x_dir(tmp_path / "geo", counts, ids, genes, barcodes, prefix="GSM1_")
    assert_table(read_matrix_file(prefixed / "GSM1_matrix.mtx.gz"), counts, genes, barcodes)


def test_10x_duplicate_symbols_fall_back_to_ids(tmp_path, counts, barcodes) -> None:
    ids = [f"ENSG{i:011d}" for i in range(N_GENES)]
    names = ["TBCE"] * 2 + symbols(N_GENES - 2)
    folder = write_10x_dir(tmp_path / "tenx", counts, ids, names, barcodes)
    assert_table(read_matrix_file(folder), counts, ids, barcodes)
    h5 = write_10x_h5(tmp_path / "dup.h5", counts, ids, names, barcodes)
    assert_table(read_matrix_file(h5), counts, ids, barcodes)


@pytest.mark.parametrize("version", [2, 3])
def test_10x_h5(tmp_path, counts, genes, barcodes, version) -> None:
    ids = [f"ENSG{i:011d}" for i in range(N_GENES)]
    path = write_10x_h5(tmp_path / f"v{version}.h5", counts, ids, genes, barcodes, version)
    assert_table(read_matrix_file(path), counts, genes, barcodes)


def test_10x_h5_keeps_gene_expression_only(tmp_path, counts, genes, barcodes) -> None:
    types = ["Gene Expression"] * (N_GENES - 1) + ["CRISPR Guide Capture"]
    ids = [f"ENSG{i:011d}" for i in range(N_GENES)]
    path = write_10x_h5(tmp_path / "g.h5", counts, ids, genes, barcodes, 3, types)
    assert_table(read_matrix_file(path), counts[:, :-1], genes[:-1], barcodes)


# --- orientation -------------------------------------------------------------------------


def _orientation(tmp_path: Path, text: str) -> str:
    path = write_text(tmp_path / "o.tsv", text)
    return delimited._detect_orientation(path, delimited._read_layout(path))


def test_orientation_rules(tmp_path) -> None:
    # Ensembl IDs as rows beat symbol-like cell names in the header.
    text = "\tcell_1\tcell_2\nENSG00000141510\t1\t0\nENSG00000012048\t0\t2\n"
    assert _orientation(tmp_path, text) == "genes-by-cells"
    # Entrez IDs in the header, row numbers as names: cells are rows.
    assert _orientation(tmp_path, "\t7157\t672\n1\t1\t0\n2\t0\t2\n3\t1\t1\n") == "cells-by-genes"
    # A metadata column decides.
    assert _orientation(tmp_path, "\tTP53\tresponse\nc1\t1\t0\nc2\t0\t1\n") == "cells-by-genes"
    # First header cell naming the genes.
    assert _orientation(tmp_path, "gene_id\tx1\tx2\nA\t1\t0\n") == "genes-by-cells"
    assert _orientation(tmp_path, "barcode\tTP53\tEGFR\nAAA\t1\t0\n") == "cells-by-genes"
    # Symbols both ways: the longer side holds the genes.
    many_rows = "\tc1\tc2\n" + "".join(f"G{i}\t1\t0\n" for i in range(5))
    assert _orientation(tmp_path, many_rows) == "genes-by-cells"
    many_cols = "\t" + "\t".join(f"G{i}" for i in range(5)) + "\nc1\t1\t0\t0\t0\t0\n"
    assert _orientation(tmp_path, many_cols) == "cells-by-genes"


def test_real_tables_are_oriented_right(real_data: Path) -> None:
    scad = read_matrix_file(real_data / "scad" / "PLX4720.tsv.gz")
    assert scad.counts.shape == (108, len(scad.genes))
    assert list(scad.obs.columns) == ["response"]
    assert scad.barcodes[0] == "A375_sc_br_cell_21"
    assert scad.genes[:3] == ["2", "14", "25980"]


# --- bad files ---------------------------------------------------------------------------


def _fails(path: Path, fragment: str, orientation: str = "auto") -> str:
    with pytest.raises(InputError, match=fragment) as info:
        read_matrix_file(path, orientation)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_missing_empty_and_unknown_files(tmp_path) -> None:
    _fails(tmp_path / "absent.tsv", "no such file")
    _fails(write_text(tmp_path / "empty.tsv", ""), "the file is empty")
    _fails(write_text(tmp_path / "empty.tsv.gz", ""), "the file is empty")
    _fails(write_text(tmp_path / "data.xlsx", "x"), "unknown file format")


def test_unreadable_files(tmp_path) -> None:
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(gzip.compress(b"GENE\tc1\nA\t1\n" * 100)[:40])
    _fails(broken, "cannot read it as a delimited table")
    _fails(write_text(tmp_path / "fake.h5ad", "not hdf5"), "cannot read it as a AnnData")
    _fails(write_text(tmp_path / "fake.h5", "not hdf5"), "cannot read it as a 10x")
    (tmp_path / "latin1.tsv").write_bytes("GENE\tc1\nCAF\xe9\t1\n".encode("latin-1"))
    _fails(tmp_path / "latin1.tsv", "not UTF-8")
    (tmp_path / "tenx").mkdir()
    _fails(tmp_path / "tenx", "no matrix.mtx")


def test_ragged_table(tmp_path) -> None:
    _fails(write_text(tmp_path / "r.tsv", "GENE\tc1\tc2\nA\t1\t0\nB\t1\n"), "line 3 has 2")
    many = "GENE\tc1\n" + "A\t1\n" * 3000 + "B\t1\t2\n"
    _fails(write_text(tmp_path / "late.tsv", many), "malformed table")


def test_non_numeric_value_is_located(tmp_path) -> None:
    text = "GENE\tc1\tc2\nA\t1\t0\nB\t1\tx7\n"
    message = _fails(write_text(tmp_path / "n.tsv", text), "non-numeric value 'x7'")
    assert "row 'B'" in message and "column 'c2'" in message and "line 3" in message
    # Beyond the first lines the reader samples, pandas locates it.
    late = "GENE\tc1\tc2\n" + "".join(f"G{i}\t1\t0\n" for i in range(3000)) + "Z\t1\toops\n"
    message = _fails(write_text(tmp_path / "late.tsv", late), "non-numeric value 'oops'")
    assert "line 3002" in message

"""Gene identifiers: Ensembl version stripping, kinds, the dominant kind."""

from __future__ import annotations

from scdrugmap.data.genes import (
    classify_gene_ids,
    dominant_id_type,
    gene_id_kinds,
    normalise_gene_id,
    normalise_gene_ids,
)


def test_ensembl_versions_are_stripped_and_symbols_kept() -> None:
    assert normalise_gene_id("ENSG00000141510.17") == "ENSG00000141510"
    assert normalise_gene_id(" ENSMUSG00000059552.9\t") == "ENSMUSG00000059552"
    assert normalise_gene_id("ENSG00000002586.20_PAR_Y") == "ENSG00000002586_PAR_Y"
    assert normalise_gene_id(" TP53 ") == "TP53"
    # Symbols with dots are not versions.
    assert normalise_gene_ids(["RP11-34P13.7", "7157", "ENSG00000141510"]) == [
        "RP11-34P13.7",
        "7157",
        "ENSG00000141510",
    ]


def test_kinds() -> None:
    names = [
        "ENSG00000141510",
        "ENSG00000141510.17",
        "ENSMUSG00000059552",
        "TP53",
        "Gapdh",
        "MT-CO1",
        "HLA-DRB1",
        "C1orf112",
        "7157",
        "AAACCTGAGAAACCAT-1",  # a cell barcode
        "",
        "0.5",
        "gene name with spaces",
    ]
    assert gene_id_kinds(names).tolist() == [
        "ensembl",
        "ensembl",
        "ensembl",
        "symbol",
        "symbol",
        "symbol",
        "symbol",
        "symbol",
        "entrez",
        "other",
        "other",
        "other",
        "other",
    ]
    counts = classify_gene_ids(names)
    assert counts == {"ensembl": 3, "symbol": 5, "entrez": 1, "other": 4, "versioned": 1}


def test_dominant_kind() -> None:
    assert dominant_id_type(classify_gene_ids(["7157", "672", "1956"])) == "entrez"
    assert dominant_id_type({"ensembl": 0, "symbol": 95, "entrez": 5, "other": 500}) == "symbol"
    assert dominant_id_type({"ensembl": 50, "symbol": 50, "entrez": 0, "other": 0}) == "mixed"
    assert dominant_id_type({"ensembl": 0, "symbol": 0, "entrez": 0, "other": 9}) == "mixed"
    assert dominant_id_type(classify_gene_ids([])) == "mixed"

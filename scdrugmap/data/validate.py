"""Checks that turn bad input into one-line errors before anything is written.

Every check looks at the sparse matrix's stored values only, so it costs
O(non-zeros), and names one offending cell and gene so the user can find it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.data.genes import classify_gene_ids
from scdrugmap.data.source import SourceTable, file_error
from scdrugmap.errors import InputError

DATASET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VALUE_KINDS = ("counts", "normalized")
NORMALIZED_FIX = "pass --values normalized if the table holds normalised or z-scored values"
_EXAMPLES = 3


def check_dataset_id(dataset_id: str) -> None:
    """Data set ids become directory names and SQL values, so they are kept plain."""
    if not isinstance(dataset_id, str) or not DATASET_ID_RE.match(dataset_id):
        raise InputError(
            f"--dataset {dataset_id!r}: not a valid data set id; use 1-64 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )


def check_value_kind(values: str) -> None:
    if values not in VALUE_KINDS:
        raise InputError(f"--values {values!r}: unknown value kind; use one of {list(VALUE_KINDS)}")


# One gene is no expression profile but a file read along the wrong axis or cut short (a
# one-row table, or a table whose cells became its genes): refused, not embedded. Two or
# more go on to the gene-identifier check, which names a wrong orientation better.
MIN_GENES = 2


def check_source(table: SourceTable, values: str, *, counts_fix: str = NORMALIZED_FIX) -> None:
    """Shape, unique names, and values fit for `values` ('counts' or 'normalized');
    `counts_fix` is the remedy named when counts are not counts."""
    n_cells, n_genes = table.counts.shape
    fix = "check that the file is complete and that --orientation is right"
    if n_genes == 0:
        raise file_error(table.path, "the file holds no genes", fix)
    if n_cells == 0:
        raise file_error(table.path, "the file holds no cells", fix)
    _check_unique(table.path, table.genes, "gene name", "make the gene names unique")
    _check_unique(table.path, table.barcodes, "barcode", "make the cell barcodes unique")
    _check_values(table, values, counts_fix)
    if n_genes < MIN_GENES:
        raise file_error(
            table.path,
            f"the file holds {n_genes} gene{'s' if n_genes > 1 else ''}, fewer than the "
            f"{MIN_GENES} any expression profile has",
            fix,
        )


def check_gene_ids(where: str, genes: Sequence[str]) -> None:
    """A data set whose gene names are all unrecognisable is almost surely read the wrong way."""
    kinds = classify_gene_ids(genes)
    if kinds["other"] == len(genes):
        examples = ", ".join(repr(g) for g in list(genes)[:_EXAMPLES])
        raise InputError(
            f"{where}: none of the {len(genes)} gene names ({examples}, ...) is an Ensembl ID, "
            "Entrez ID or gene symbol; check --orientation (the genes may be on the other axis) "
            "and that the gene names are in the first column or the header"
        )


def _check_unique(path: Path, names: Sequence[str], what: str, fix: str) -> None:
    index = pd.Index(names, dtype=object)
    duplicated = index[index.duplicated()].unique()
    if len(duplicated):
        examples = ", ".join(repr(n) for n in duplicated[:_EXAMPLES])
        problem = f"duplicated {what}s ({len(duplicated)} of them, e.g. {examples})"
        raise file_error(path, problem, fix)


def _check_values(table: SourceTable, values: str, counts_fix: str) -> None:
    data = table.counts.data
    if table.counts.nnz == 0:
        raise file_error(table.path, "every value is zero", "check that the file holds the data")
    finite = np.isfinite(data)
    if not finite.all():
        raise _value_error(
            table,
            ~finite,
            "missing or infinite values (NaN/inf)",
            "replace missing values by 0 where they mean no expression, or drop those cells",
        )
    if values == "normalized":
        return
    negative = data < 0
    if negative.any():
        raise _value_error(table, negative, "negative values, which counts cannot have", counts_fix)
    fractional = data != np.floor(data)
    if fractional.any():
        problem = "non-integer values, which counts cannot have"
        raise _value_error(table, fractional, problem, counts_fix)


def _value_error(table: SourceTable, bad: np.ndarray, problem: str, fix: str) -> InputError:
    first = int(np.argmax(bad))
    cell = int(np.searchsorted(table.counts.indptr, first, side="right")) - 1
    gene = int(table.counts.indices[first])
    value = table.counts.data[first]
    where = f"e.g. {value:g} for cell {table.barcodes[cell]!r}, gene {table.genes[gene]!r}"
    return file_error(table.path, f"{problem} ({int(bad.sum())} of them, {where})", fix)

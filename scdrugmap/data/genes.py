"""Recognising and normalising gene identifiers.

Models index their vocabularies by Ensembl ID (Geneformer, CellPLM) or by
symbol (scGPT, scFoundation, tGPT), and data sets arrive with either, or with
Entrez IDs (SCAD). Ingest records which kind a data set uses so later stages
can map it, and strips Ensembl version suffixes because no vocabulary carries
them: ENSG00000141510.17 and ENSG00000141510 are the same gene to a model.

Kinds, tested in this order:

* ``ensembl``: ``ENS`` + optional three-letter species code + ``G`` + 11
  digits (ENSG..., ENSMUSG..., ENSDARG...), optionally ``.<version>`` and the
  GENCODE ``_PAR_Y`` suffix;
* ``entrez``: digits only, no leading zero;
* ``other`` for cell-barcode-like strings (8 or more of A/C/G/T/N, optional
  ``-1`` suffix): they show a table was read the wrong way round;
* ``symbol``: starts with a letter, then letters, digits and ``. _ - : / @``,
  at most 40 characters (HGNC and MGI symbols, clone names like RP11-34P13.7);
* ``other``: everything else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

KINDS = ("ensembl", "symbol", "entrez", "other")
# The share of recognised identifiers one kind needs to be called dominant;
# below it the data set is 'mixed' and model vocabularies need care.
DOMINANT_SHARE = 0.9

_ENSEMBL = r"ENS(?:[A-Z]{3})?G\d{11}"
_ENSEMBL_RE = rf"^{_ENSEMBL}(?:\.\d+)?(?:_PAR_Y)?$"
_VERSION_RE = rf"^({_ENSEMBL})\.\d+"
_VERSIONED_RE = rf"^{_ENSEMBL}\.\d+"
_ENTREZ_RE = r"^[1-9]\d{0,9}$"
_BARCODE_RE = r"^[ACGTN]{8,}(?:-\d+)?$"
_SYMBOL_RE = r"^[A-Za-z][A-Za-z0-9._:/@-]{0,39}$"


def _series(names: Sequence[str]) -> pd.Series:
    return pd.Series(np.asarray(names, dtype=object), dtype=object).astype(str).str.strip()


def normalise_gene_id(name: str) -> str:
    """Strip whitespace and an Ensembl version suffix; symbols are returned unchanged."""
    return normalise_gene_ids([name])[0]


def normalise_gene_ids(names: Sequence[str]) -> list[str]:
    """`normalise_gene_id` over many names at once (one regex pass, not a loop)."""
    return _series(names).str.replace(_VERSION_RE, r"\1", regex=True).tolist()


def gene_id_kinds(names: Sequence[str]) -> np.ndarray:
    """The kind of each name ('ensembl' | 'symbol' | 'entrez' | 'other'), as an object array."""
    s = _series(names)
    kinds = np.full(len(s), "other", dtype=object)
    undecided = np.ones(len(s), dtype=bool)
    for kind, pattern in (
        ("ensembl", _ENSEMBL_RE),
        ("entrez", _ENTREZ_RE),
        ("other", _BARCODE_RE),
        ("symbol", _SYMBOL_RE),
    ):
        hit = undecided & s.str.match(pattern).to_numpy(dtype=bool)
        kinds[hit] = kind
        undecided &= ~hit
    return kinds


_PRECEDENCE = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("ensembl", _ENSEMBL_RE),
        ("entrez", _ENTREZ_RE),
        ("other", _BARCODE_RE),
        ("symbol", _SYMBOL_RE),
    )
)


def is_gene_symbol(name: str) -> bool:
    """One name's kind is 'symbol' (as `gene_id_kinds` decides), without building a Series."""
    name = str(name).strip()
    for kind, pattern in _PRECEDENCE:
        if pattern.match(name):
            return kind == "symbol"
    return False


def classify_gene_ids(names: Sequence[str]) -> dict[str, int]:
    """How many names are of each kind, plus 'versioned': Ensembl IDs that carried a version."""
    kinds = gene_id_kinds(names)
    counts = {kind: int(np.count_nonzero(kinds == kind)) for kind in KINDS}
    counts["versioned"] = int(_series(names).str.match(_VERSIONED_RE).sum())
    return counts


def dominant_id_type(counts: dict[str, int]) -> str:
    """'ensembl' | 'symbol' | 'entrez' when one kind holds >= 90 % of the recognised names.

    'other' names are left out of the share, so a few odd features (spike-ins,
    unnamed clones) do not hide that a data set is keyed by symbols; a data set
    with no recognised name at all is 'mixed'.
    """
    recognised = {kind: int(counts.get(kind, 0)) for kind in ("ensembl", "symbol", "entrez")}
    total = sum(recognised.values())
    if total == 0:
        return "mixed"
    kind = max(recognised, key=recognised.__getitem__)
    return kind if recognised[kind] >= DOMINANT_SHARE * total else "mixed"

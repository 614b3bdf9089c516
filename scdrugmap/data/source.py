"""What every reader returns, and the one way ingest errors are worded.

Kept apart from the readers so the format modules (delimited, 10x, h5ad) can
share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import sparse

from scdrugmap.errors import InputError


@dataclass
class SourceTable:
    """What one input file yields, before labels/samples are attached."""

    path: Path
    counts: sparse.csr_matrix  # cells x genes, float32, exactly the file's values
    genes: list[str]  # as written in the file (stripped of whitespace)
    barcodes: list[str]
    obs: pd.DataFrame  # other per-cell columns the file carries, index = barcodes, may be empty


def file_error(path: Path | str, problem: str, fix: str) -> InputError:
    """`<file>: <problem>; <fix>` on one line, because the CLI shows it verbatim."""
    text = f"{path}: {problem}; {fix}"
    return InputError(text.replace("\r", " ").replace("\n", " "))


def empty_obs(barcodes: list[str]) -> pd.DataFrame:
    """Formats without per-cell annotations still need an obs indexed by barcode."""
    return pd.DataFrame(index=pd.Index(barcodes, dtype=object))

"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from scdrugmap.data.readers import SourceTable, read_matrix_file

REAL_DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """tests/data: trimmed real cells (PC9, SCAD) and the published model vocabularies,
    kept in the repository (see tests/data/README.md for sources and licences)."""
    return REAL_DATA


@pytest.fixture(scope="session")
def pc9_control(real_data: Path) -> SourceTable:
    """Real PC9 control cells (day 11), read once for every test that embeds real cells."""
    return read_matrix_file(real_data / "pc9_erlotinib" / "Day11_control.txt.gz")

"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from scdrugmap.data.readers import SourceTable, read_matrix_file

SHARED_DIR = Path(__file__).parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real data and model vocabularies); a test using it skips when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"../shared is absent: {SHARED_DIR} holds the real data this test needs")
    return SHARED_DIR


@pytest.fixture(scope="session")
def pc9_control(shared_dir: Path) -> SourceTable:
    """Real PC9 control cells (day 11), read once for every test that embeds real cells."""
    return read_matrix_file(shared_dir / "data" / "pc9_erlotinib" / "Day11_control.txt.gz")

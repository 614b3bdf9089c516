"""The README's Python API section, run as a notebook runs it: its python blocks in
order, in one fresh interpreter (this venv's), in a folder holding copies of the real
PC9 files it names (tests/data's, the tour's). Then what the code left in its variables
is checked, not only that it ran. The block that uses scanpy, which is not a dependency,
runs only where scanpy is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.readme_commands import python_blocks, section
from tests.acceptance.test_readme_tour import COMMAND_SECONDS, TOUR_FILES

SCANPY = importlib.util.find_spec("scanpy") is not None
# Appended to the README's code: what its variables hold, for the tests below.
OUTCOME = """
import json as _json

_datasets = store.datasets().set_index("dataset_id")
_json.dump(
    {
        "pc9": _datasets.loc["pc9", ["n_cells", "n_sensitive", "n_resistant"]].tolist(),
        "note": run.note,
        "results": store.results()[["embedding", "classifier"]].drop_duplicates().values.tolist(),
        "sample_calls": dict(zip(calls.samples["sample"], calls.samples["call"])),
        "adata": [adata.n_obs, *adata.obsm["X_pca"].shape],
        "failures": sorted(set(adata.obs["pca_failure"])),
        "coverage": adata.obs["coverage_pca"].agg(["min", "max"]).astype(float).tolist(),
    },
    open("outcome.json", "w"),
    default=lambda value: value.item(),  # numpy scalars
)
"""


def _code() -> str:
    blocks = python_blocks(section("Python API"))
    assert any("import scanpy" in b for b in blocks), "the scanpy part left the README"
    return "\n".join(b for b in blocks if SCANPY or "import scanpy" not in b)


@pytest.fixture(scope="module")
def outcome(real_data: Path, tmp_path_factory) -> dict:
    code = _code()
    folder = tmp_path_factory.mktemp("python-api")
    named = [n for n in TOUR_FILES if Path(n).name in code]
    assert named, "the README's Python example names none of the tour's files"
    for name in named:
        shutil.copy(real_data / name, folder / Path(name).name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCDRUGMAP_")}
    env["MPLBACKEND"] = "Agg"  # sc.pl draws without a display
    done = subprocess.run(
        [sys.executable, "-c", code + OUTCOME],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"the README's Python code failed:\n{done.stdout}{done.stderr}"
    return json.loads((folder / "outcome.json").read_text())


def test_the_store_holds_the_pc9_cells_and_a_run(outcome: dict) -> None:
    assert outcome["pc9"] == [3650, 1500, 2150]
    assert "cell" in outcome["note"]  # one sample per label: cell-level folds, said so
    assert ["pca", "lightgbm"] in outcome["results"]


def test_the_predictor_calls_the_control_cells_sensitive(outcome: dict) -> None:
    assert outcome["sample_calls"] == {"control": "sensitive"}


def test_embed_anndata_filled_the_anndata_and_the_failures_were_dropped(outcome: dict) -> None:
    n_cells, n_rows, dim = outcome["adata"]
    assert n_rows == n_cells and dim == 50
    assert 1400 < n_cells < 1500  # the control cells less those pca saw nothing of
    assert outcome["failures"] == [""]
    low, high = outcome["coverage"]
    assert 0 < low <= high <= 1

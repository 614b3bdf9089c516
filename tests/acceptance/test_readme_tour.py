"""The README's tour, run as a user runs it: its own commands, through the installed
`scdrugmap` executable, on the real PC9 and SCAD cells in tests/data; then the web
service it describes, with an upload through the HTTP API.

The tour runs once (module fixture); each test checks one outcome a user would look
at, not only exit codes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import httpx
import numpy as np
import pandas as pd
import pytest

from tests.acceptance.readme_commands import commands, section
from tests.serve_server import free_port

EXECUTABLE = Path(sys.executable).with_name("scdrugmap")
TOUR_FILES = (
    "pc9_erlotinib/Day11_control.txt.gz",
    "pc9_erlotinib/Day11_Erlotinib.txt.gz",
    "scad/PLX4720.tsv.gz",
    "scad/Afatinib.tsv.gz",
)
COMMAND_SECONDS = 600


@dataclass
class Tour:
    """Where the tour ran, its environment, and each command's output (stdout + stderr)."""

    folder: Path
    env: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.folder / self.env["SCDRUGMAP_STORE"]

    def run(self, argv: list[str]) -> str:
        assert argv[0] == "scdrugmap", f"the tour runs scdrugmap only, not {argv}"
        done = subprocess.run(
            [str(EXECUTABLE), *argv[1:]],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            stdin=subprocess.DEVNULL,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"`{' '.join(argv)}` failed:\n{output}"
        return output

    def output_of(self, *words: str) -> str:
        """The output of the one tour command whose argv starts with `words`."""
        (found,) = [
            o for line, o in self.outputs.items() if line.split()[: len(words)] == list(words)
        ]
        return found

    def json(self, *args: str):
        return json.loads(self.run(["scdrugmap", *args, "--json"]))

    def sql(self, query: str) -> pd.DataFrame:
        return pd.DataFrame(self.json("sql", query))


def _run_block(tour: Tour, text: str) -> None:
    for argv in commands(text):
        if argv[0] == "export":
            name, value = argv[1].split("=", 1)
            tour.env[name] = value
            continue
        if argv[:2] == ["scdrugmap", "serve"]:
            continue  # a server; the service test below starts it on a free port
        tour.outputs[" ".join(argv)] = tour.run(argv)


@pytest.fixture(scope="module")
def tour(real_data: Path, tmp_path_factory) -> Tour:
    assert EXECUTABLE.is_file(), f"install the project first: {EXECUTABLE} is missing"
    folder = tmp_path_factory.mktemp("tour")
    for name in TOUR_FILES:
        shutil.copy(real_data / name, folder / Path(name).name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCDRUGMAP_")}
    tour = Tour(folder, env)
    _run_block(tour, section("A tour with real data"))
    return tour


def _failures(tour: Tour, key: str, dataset_id: str) -> int:
    return int(
        tour.sql(
            "SELECT count(*) AS n FROM failures "
            f"WHERE key = '{key}' AND dataset_id = '{dataset_id}'"
        )["n"].iloc[0]
    )


def test_ingest_counts_the_real_cells_and_labels(tour: Tour) -> None:
    said = tour.output_of("scdrugmap", "ingest", "Day11_control.txt.gz")
    assert "3650 cells" in said and "1500 sensitive / 2150 resistant" in said
    counts = tour.sql("SELECT dataset_id, label, count(*) AS n FROM cells GROUP BY ALL")
    counts = counts.set_index(["dataset_id", "label"])["n"].to_dict()
    assert counts[("pc9", "sensitive")] == 1500 and counts[("pc9", "resistant")] == 2150
    assert counts[("plx4720", "sensitive")] + counts[("plx4720", "resistant")] == 108
    assert counts[("afatinib", "sensitive")] + counts[("afatinib", "resistant")] == 120
    datasets = pd.DataFrame(tour.json("datasets")).set_index("dataset_id")
    assert datasets.loc["pc9", "drug"] == "erlotinib"
    assert datasets.loc["plx4720", "gene_id_type"] == "entrez"


def test_both_baselines_embed_every_pc9_cell(tour: Tour) -> None:
    embeddings = pd.DataFrame(tour.json("embeddings"))
    pc9 = embeddings.query("dataset_id == 'pc9'").set_index("key")
    assert set(pc9.index) == {"pca", "hvg"}
    assert pc9["complete"].all() and (pc9["n_cells"] == 3650).all()
    failed = _failures(tour, "pca", "pc9")
    assert failed > 0
    assert f"{failed} cells had no expressed gene" in tour.output_of(
        "scdrugmap", "embed", "--model", "pca", "--datasets", "all"
    )


def test_evaluate_says_it_fell_back_to_cells_and_left_the_failures_out(tour: Tour) -> None:
    (said,) = [
        output
        for line, output in tour.outputs.items()
        if line.startswith("scdrugmap evaluate") and "--control" not in line
    ]
    failed = _failures(tour, "pca", "pc9")
    assert "sample-grouped folds impossible" in said and "optimistic" in said
    assert f"{failed} cells the embedding saw nothing of" in said
    runs = tour.sql(
        "SELECT n_cells, cell_level, grouping FROM runs WHERE embedding = 'pca' AND control IS NULL"
    )
    assert runs["n_cells"].iloc[0] == 3650 - failed and bool(runs["cell_level"].iloc[0])
    assert runs["grouping"].iloc[0] == "cell"


def test_the_shuffled_control_sits_beside_its_run_at_chance(tour: Tour) -> None:
    results = pd.DataFrame(tour.json("results"))
    pc9 = results.query("embedding == 'pca' and classifier == 'lightgbm'").set_index("control")
    assert set(pc9.index) == {"", "shuffled"}
    assert pc9.loc["", "auroc_mean"] > 0.75 and abs(pc9.loc["shuffled", "auroc_mean"] - 0.5) < 0.1
    assert pc9["optimistic"].all() and set(pc9["grouping"]) == {"cell"}
    page = (tour.folder / "report" / "index.html").read_text()
    assert "AUROC, shuffled labels" in page


def test_fits_within_folds_are_kept_beside_the_stored_fit(tour: Tour) -> None:
    runs = tour.sql("SELECT embedding, params FROM runs WHERE split = 'cross-dataset'")
    within = runs.query("embedding == 'pca-scad (fit within folds)'")
    fits = json.loads(within["params"].iloc[0])["fold_fits"]
    assert fits == {"afatinib": ["plx4720"], "plx4720": ["afatinib"]}
    assert (
        "held-out data sets afatinib, plx4720 were in the embedding"  # then an escaped apostrophe
        in (tour.folder / "report" / "index.html").read_text()
    )


def test_benchmark_and_results_hold_every_combination(tour: Tour) -> None:
    results = pd.DataFrame(tour.json("results"))
    scad = results.query("embedding == 'pca-scad' and split == 'cross-dataset'")
    assert set(scad["classifier"]) == {"logreg", "lightgbm", "mlp"}
    assert "pca-scad" in tour.output_of("scdrugmap", "results")


def test_report_and_export_open(tour: Tour) -> None:
    page = (tour.folder / "report" / "index.html").read_text()
    assert "pca-scad" in page and "lightgbm" in page
    adata = ad.read_h5ad(tour.folder / "pc9.h5ad")
    assert adata.n_obs == 3650 and adata.obsm["X_pca"].shape == (3650, 50)
    flat = adata.obs.reset_index()
    assert set(flat["drug"]) == {"erlotinib"} and set(flat["sample"]) == {"control", "erlotinib"}


def test_a_pca_predictor_calls_control_sensitive_and_erlotinib_resistant(tour: Tour) -> None:
    said = tour.output_of("scdrugmap", "train")
    assert "using the data sets that hold embedding 'pca': pc9" in said
    samples = pd.read_csv(tour.folder / "calls.samples.csv").set_index("sample")
    assert samples.loc["control", "call"] == "sensitive"
    assert samples.loc["erlotinib", "call"] == "resistant"
    cells = pd.read_csv(tour.folder / "calls.csv")
    (predicted,) = set(cells["dataset_id"])
    no_call = cells[cells["call"] == "no call"]
    assert len(no_call) == _failures(tour, "pca", predicted) > 0
    assert no_call["prob_sensitive"].isna().all()


def _wait_for(base: str, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "scdrugmap serve exited"
        try:
            httpx.get(f"{base}/api/predictors", timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"scdrugmap serve did not answer within {seconds} s")


def _served_calls(base: str, upload: Path) -> pd.DataFrame:
    job = httpx.post(
        f"{base}/api/jobs",
        params={"predictor": "pca-logreg", "filename": upload.name, "sample": "control"},
        content=upload.read_bytes(),
        timeout=60,
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 300
    while (state := httpx.get(f"{base}/api/jobs/{job_id}", timeout=10).json())["state"] not in (
        "done",
        "failed",
    ):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["state"] == "done", state
    # The pca panel holds genes found only in the erlotinib file.
    assert 0.9 < state["gene_coverage"] < 1 and "pca panel" in state["coverage_basis"]
    cells = httpx.get(f"{base}/api/jobs/{job_id}/cells.json", params={"limit": 100_000}).json()
    return pd.DataFrame(cells["cells"] if isinstance(cells, dict) else cells)


def test_served_probabilities_equal_predicts(tour: Tour) -> None:
    (serve,) = [a for a in commands(section("The web service")) if a[:2] == ["scdrugmap", "serve"]]
    port = free_port()
    log = (tour.folder / "serve.log").open("w")
    process = subprocess.Popen(
        [str(EXECUTABLE), *serve[1:], "--port", str(port)],
        cwd=tour.folder,
        env=tour.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base, process)
        served = _served_calls(base, tour.folder / "Day11_control.txt.gz")
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    predicted = pd.read_csv(tour.folder / "calls.csv").query("sample == 'control'")
    assert len(served) == len(predicted) == 1500
    np.testing.assert_allclose(
        served["prob_sensitive"].to_numpy(dtype=float),
        predicted["prob_sensitive"].to_numpy(dtype=float),
        rtol=0,
        atol=1e-6,
    )
    assert (served["call"].to_numpy() == predicted["call"].to_numpy()).all()

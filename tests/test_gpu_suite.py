"""The GPU suite's quick run on the CPU, as CI runs it: every foundation model is measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_suite import device_peak, spread_rows
from scdrugmap.embed.registry import MODELS

REPOSITORY = Path(__file__).parents[1]


def test_quick_suite_measures_every_model(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    command = [sys.executable, "-m", "benchmarks.gpu_suite", "--quick", "--device", "cpu"]
    done = subprocess.run(
        [*command, "--cells", "16", "--out", str(out), "--dir", str(tmp_path)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    foundation = {name for name, spec in MODELS.items() if not spec.fitted_in_store}
    assert set(report["models"]) == foundation
    assert report["quick"] and report["peak_tflops"] is None
    for model, entry in report["models"].items():
        assert entry["dtypes"] == ["float32"], model
        row = entry["float32"]
        assert "error" not in row, (model, row.get("error"))
        assert row["ours_cells_per_s"] > 0 and row["reference_cells_per_s"] > 0, model
        assert row["cells"] == 16 and row["tokens_per_cell"] >= 1, model
        assert 0 < row["parameters_counted"] <= row["parameters"], model
        assert row["largest_batch"] == 16 and row["largest_batch_stopped_by"] == "cell bound"
        assert row["ours_mfu"] is None and row["ours_peak_gpu_mib"] is None, model
    for model in report["models"]:
        assert model in done.stdout, f"{model} missing from the printed table"


def test_device_names_find_their_peaks() -> None:
    assert device_peak("NVIDIA H100 80GB HBM3")[0] == "H100 SXM"
    assert device_peak("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert device_peak("NVIDIA H200")[1]["bfloat16"] == 989.5
    assert device_peak("NVIDIA H200 NVL")[0] == "H200 NVL"
    assert device_peak("NVIDIA A100-SXM4-80GB") == (None, None)


def test_cells_are_spread_over_the_file() -> None:
    rows = spread_rows(6000, 4)
    assert rows.tolist() == [750, 2250, 3750, 5250]
    assert spread_rows(5, 8).tolist() == [0, 1, 2, 3, 4]

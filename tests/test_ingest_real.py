"""`scdrugmap ingest` on the real PC9 files, run as a user runs it: labels per file, errors
in one line, and a bar while a big table is read."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anndata
import pandas as pd
import pytest

from scdrugmap.data.prepare import IngestOptions, prepare_dataset
from scdrugmap.data.readers import SourceTable, read_matrix_file
from scdrugmap.errors import InputError
from scdrugmap.progress import progress_to


def cli(
    *args: str | Path, store: Path, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """The installed command in a fresh process, as a user meets it (warnings included)."""
    command = [*prefix, sys.executable, "-m", "scdrugmap.cli", "--store", str(store)]
    return subprocess.run(
        [*command, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The only thing on stderr: one `error: ...` line; nothing on stdout."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def pc9(real_data: Path) -> list[Path]:
    folder = real_data / "pc9_erlotinib"
    return [folder / "Day11_control.txt.gz", folder / "Day11_Erlotinib.txt.gz"]


# --- A: one --label per file ------------------------------------------------------------


def test_one_label_for_two_files_is_refused_naming_the_counts(pc9, tmp_path) -> None:
    store = tmp_path / "store"
    result = cli(
        "ingest", *pc9, "--dataset", "pc9", "--sample", "control", "--sample", "erlotinib",
        "--label", "sensitive", store=store,
    )  # fmt: skip
    line = one_error_line(result)
    assert "--label given 1 times for 2 files" in line and "one per file" in line
    assert not store.exists()


def test_labels_per_file_label_each_file(pc9, tmp_path) -> None:
    result = cli(
        "ingest", *pc9, "--dataset", "pc9", "--sample", "control", "--sample", "erlotinib",
        "--label", "sensitive", "--label", "resistant", "--json", store=tmp_path / "store",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["n_sensitive"], row["n_resistant"]) == (1500, 2150)
    assert row["warnings"] == [] and result.stderr == ""


def test_a_data_set_of_one_label_is_ingested_with_a_warning(pc9, tmp_path) -> None:
    store = tmp_path / "store"
    shown = cli("ingest", pc9[0], "--dataset", "ctl", "--label", "sensitive", store=store)
    assert shown.returncode == 0, shown.stderr
    assert "1500 sensitive / 0 resistant" in shown.stdout
    (warning,) = shown.stderr.splitlines()
    assert warning.startswith("warning: all 1500 cells of 'ctl' are labelled sensitive")
    as_json = cli(
        "ingest", pc9[0], "--dataset", "ctl2", "--label", "sensitive", "--json", store=store
    )
    (row,) = json.loads(as_json.stdout)
    label_warning, copy_warning = row["warnings"]
    assert label_warning == warning.removeprefix("warning: ").replace("'ctl'", "'ctl2'")
    # The same file under a second identifier is the same cells, and is said to be.
    assert copy_warning.startswith("1500 of the 1500 cells of ctl2 are identical to cells of ctl")
    assert row["shared_cells"] == [{"dataset_id": "ctl", "n_shared": 1500, "n_conflicting": 0}]


def test_prepared_data_sets_carry_the_warning(pc9, real_data) -> None:
    one = prepare_dataset(pc9[:1], IngestOptions("ctl", labels=["sensitive"]))
    assert len(one.warnings) == 1 and "need resistant cells" in one.warnings[0]
    both = IngestOptions("pc9", samples=["c", "e"], labels=["sensitive", "resistant"])
    assert prepare_dataset(pc9, both).warnings == []
    unlabelled = prepare_dataset(pc9[:1], IngestOptions("new"))
    assert unlabelled.warnings == []  # cells to predict, not a one-sided training set
    with pytest.raises(InputError, match="--label given 1 times for 2 files"):
        prepare_dataset(pc9, IngestOptions("pc9", samples=["c", "e"], labels=["sensitive"]))


# --- B: errors in one line -----------------------------------------------------------------


def _h5ad_with_a_repeated_cell(table: SourceTable, path: Path) -> Path:
    """200 real PC9 cells, the last named like the first (as a careless concatenation does)."""
    barcodes = table.barcodes[:200]
    barcodes[-1] = barcodes[0]
    with pytest.warns(UserWarning, match="not unique"):
        adata = anndata.AnnData(
            X=table.counts[:200],
            obs=pd.DataFrame(index=barcodes),
            var=pd.DataFrame(index=table.genes),
        )
    adata.write_h5ad(path)
    return path


def test_duplicate_cell_names_in_h5ad_give_only_the_error(pc9_control, tmp_path) -> None:
    """anndata warned "Observation names are not unique" before our error."""
    path = _h5ad_with_a_repeated_cell(pc9_control, tmp_path / "pc9.h5ad")
    line = one_error_line(cli("ingest", path, "--dataset", "dup", store=tmp_path / "store"))
    assert "duplicated barcodes" in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ingest", "{control}", "--dataset", "x", "--label", "maybe"], "'maybe' is not one of"),
        (["ingest", "{control}", "--label", "sensitive"], "Missing option '--dataset'"),
        (["ingest", "{control}", "--dataset", "x", "--lable", "sensitive"], "No such option"),
        (["embed", "--model", "pca", "--dtype", "int8"], "'int8' is not one of"),
        (["datasets", "--jsn"], "No such option"),
        (["ingst", "{control}"], "No such command 'ingst'"),
        (["--stor", "x", "datasets"], "No such option"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_two(pc9, tmp_path, args, fragment) -> None:
    """click printed its usage block and a `Try ... --help` line around the error."""
    filled = [a.format(control=pc9[0]) for a in args]
    line = one_error_line(cli(*filled, store=tmp_path / "store"), code=2)
    assert fragment in line and "--help`)" in line


def test_a_symbolic_link_loop_is_named_as_one(tmp_path) -> None:
    """It was reported as 'no such file or directory'."""
    (tmp_path / "a.tsv").symlink_to(tmp_path / "b.tsv")
    (tmp_path / "b.tsv").symlink_to(tmp_path / "a.tsv")
    line = one_error_line(cli("ingest", tmp_path / "a.tsv", "--dataset", "x", store=tmp_path))
    assert "symbolic link loop" in line


def test_a_dangling_link_names_its_target(pc9, tmp_path) -> None:
    link = tmp_path / "control.txt.gz"
    link.symlink_to(tmp_path / "moved" / pc9[0].name)
    with pytest.raises(InputError, match=r"a symbolic link to .*moved.*, which does not exist"):
        read_matrix_file(link)


def test_a_file_name_too_long_is_one_line(tmp_path) -> None:
    """It ended in a traceback (OSError: File name too long) from Path.exists."""
    path = tmp_path / ("x" * 300 + ".tsv")
    line = one_error_line(cli("ingest", path, "--dataset", "x", store=tmp_path / "store"))
    assert "the file name is too long" in line


def _without_read_override() -> tuple[str, ...]:
    """A command prefix under which permissions apply: root reads every file otherwise."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    dropped = "-dac_override,-dac_read_search"
    return ("setpriv", f"--bounding-set={dropped}", f"--inh-caps={dropped}")


def test_files_that_cannot_be_read_are_one_line(pc9, tmp_path) -> None:
    prefix = _without_read_override()
    locked = tmp_path / "locked"
    locked.mkdir()
    table = shutil.copy(pc9[0], locked / "control.txt.gz")
    locked.chmod(0o000)
    try:
        line = one_error_line(
            cli("ingest", table, "--dataset", "x", store=tmp_path / "s", prefix=prefix)
        )
    finally:
        locked.chmod(0o755)
    assert "permission denied" in line


@pytest.mark.parametrize("case", ["empty directory", "empty gzip", "cut short", "not gzip"])
def test_broken_real_files_are_one_line(pc9, tmp_path, case) -> None:
    path = {
        "empty directory": tmp_path / "tenx",
        "empty gzip": tmp_path / "empty.txt.gz",
        "cut short": tmp_path / "cut.txt.gz",
        "not gzip": tmp_path / "fake.h5ad",
    }[case]
    if case == "empty directory":
        path.mkdir()
    elif case == "empty gzip":
        path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00")
    else:
        path.write_bytes(pc9[0].read_bytes()[:200_000])
    one_error_line(cli("ingest", path, "--dataset", "x", store=tmp_path / "store"))


# --- C: a bar while the files are read -------------------------------------------------------


def test_ingest_shows_the_bytes_read_and_json_stays_clean(pc9, tmp_path) -> None:
    store = tmp_path / "store"
    result = cli("ingest", pc9[0], "--dataset", "ctl", "--label", "sensitive", store=store)
    size = pc9[0].stat().st_size / 1e3  # kB, as the bar counts them
    bar = re.search(r"reading Day11_control\.txt\.gz .*? ([\d.]+)/([\d.]+) kB", result.stdout)
    assert bar, result.stdout
    assert float(bar[1]) == float(bar[2]) == pytest.approx(size, abs=0.1)
    quiet = cli("ingest", pc9[0], "--dataset", "c2", "--label", "sensitive", "--json", store=store)
    assert json.loads(quiet.stdout)[0]["n_cells"] == 1500


def test_a_listener_hears_the_reading_of_every_file(pc9) -> None:
    """The web service follows work through a listener; reading was silent."""
    heard = []
    with progress_to(lambda *event: heard.append(event)):
        prepare_dataset(
            pc9, IngestOptions("pc9", samples=["c", "e"], labels=["sensitive", "resistant"])
        )
    for path in pc9:
        events = [e for e in heard if e[0] == f"reading {path.name}"]
        size = path.stat().st_size
        assert events[0][1:3] == (0, size) and events[-1][1:3] == (size, size)
        assert len(events) > 2  # block by block, not only at the end

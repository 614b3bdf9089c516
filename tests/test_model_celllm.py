"""CellLM on a small random PerformerLM_CellLM in the published layout, with real PC9 cells.

OpenBioMed's 19,379-gene panel is not among the vocabularies in tests/data; the
panel here is the 3,000 most expressed PC9 symbols.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.models.celllm import CellLMEmbedder
from scdrugmap.errors import InputError
from tests.celllm_checkpoint import write_celllm_checkpoint
from tests.data_files import top_expressed_genes, write_sample
from tests.performer_checkpoint import SHAPE

ROWS = np.r_[0:3, 750:777]
N_CELLS = len(ROWS)


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def panel(pc9_control: SourceTable) -> list[str]:
    return top_expressed_genes(pc9_control, 3000)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, panel: list[str]) -> Path:
    return write_celllm_checkpoint(tmp_path_factory.mktemp("celllm") / "model", panel)


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> CellLMEmbedder:
    return CellLMEmbedder.load(checkpoint, **SHAPE)


@pytest.fixture(scope="module")
def embedding(embedder: CellLMEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def test_embeddings_have_the_model_width(embedder, embedding) -> None:
    assert embedder.dim == 32 and embedding.shape == (N_CELLS, 32)
    assert np.isfinite(embedding).all()


def test_hand_made_cell_gives_the_exact_tokens(embedder: CellLMEmbedder, panel) -> None:
    genes = [panel[5], panel[2], panel[9], "NOT_IN_PANEL"]
    counts = sparse.csr_matrix(np.array([[1, 3, 9996, 40], [0, 0, 0, 4]]))
    batch = embedder.tokenize(counts, genes)
    cell = slice(batch.offsets[0], batch.offsets[1])
    assert batch.tokens[cell].tolist() == [6, 2, 1, 5]  # CLS, then panel order, clipped at 5
    assert batch.positions[cell].tolist() == [len(panel), 2, 5, 9]
    assert batch.offsets[2] == batch.offsets[1]  # nothing expressed on the panel
    assert (embedder.embed(batch)[1] == 0).all()


def test_one_weighted_position_stands_for_the_padding_run(embedder, pc9) -> None:
    """The reference pads to 6,000 positions and masks only values; here the same with
    an explicit run of padding against one position counted that many times."""
    counts, genes = pc9
    batch = embedder.tokenize(counts[3:4], genes)
    model = embedder.model
    n = int(batch.offsets[1])
    pads = 300
    tokens = np.r_[batch.tokens, np.full(pads, 7)]
    positions = np.r_[batch.positions, np.full(pads, model.pos_emb.emb.num_embeddings - 1)]
    real = torch.from_numpy(np.r_[np.ones(n, bool), np.zeros(pads, bool)])[None]
    with torch.no_grad():
        explicit = model(
            torch.from_numpy(tokens)[None],
            torch.from_numpy(positions)[None],
            real,
            torch.ones(1, n + pads),
        )[0, 1:n].mean(0)
        weighted = model(
            torch.from_numpy(tokens[: n + 1])[None],
            torch.from_numpy(positions[: n + 1])[None],
            real[:, : n + 1],
            torch.from_numpy(np.r_[np.ones(n, np.float32), np.float32(pads)])[None],
        )[0, 1:n].mean(0)
    torch.testing.assert_close(weighted, explicit, rtol=1e-5, atol=1e-6)


def test_long_cells_are_cut_to_the_padding_length(checkpoint: Path, pc9) -> None:
    counts, genes = pc9
    short = CellLMEmbedder.load(checkpoint, max_seq_len=50, **SHAPE)
    batch = short.tokenize(counts, genes)
    assert (np.diff(batch.offsets) <= 50).all() and np.diff(batch.offsets).max() == 50


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    checkpoint: Path, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small = CellLMEmbedder.load(checkpoint, max_tokens=1500, max_cells=3, **SHAPE)
    chunks = [small.embed(small.tokenize(counts[i : i + 7], genes)) for i in range(0, N_CELLS, 7)]
    np.testing.assert_allclose(np.vstack(chunks), embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    np.testing.assert_allclose(
        small.embed(small.tokenize(counts[order], genes)), embedding[order], atol=1e-5
    )


class _Shell:
    """Anything a restricted loader must refuse."""


def test_bad_checkpoints_and_options_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="pooling"):
        CellLMEmbedder.load(checkpoint, pooling="max", **SHAPE)
    with pytest.raises(InputError, match="shapes do not fit"):
        CellLMEmbedder.load(checkpoint, heads=4, dim_head=16)
    folder = tmp_path / "broken"
    shutil.copytree(checkpoint, folder)
    with (folder / "checkpoint4_fixed.pth").open("wb") as handle:
        pickle.dump({"model_state_dict": _Shell()}, handle)
    with pytest.raises(InputError, match="not a plain weights file"):
        CellLMEmbedder.load(folder, **SHAPE)
    (folder / "gene_panel.txt").unlink()
    with pytest.raises(InputError, match="gene panel is missing"):
        CellLMEmbedder.load(folder, **SHAPE)


def test_store_embed_end_to_end(checkpoint: Path, pc9, tmp_path: Path, embedder) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:15], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[15:30], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("celllm", checkpoint=checkpoint, chunk_size=10, device="cpu", **SHAPE)
    array = store.embedding_array("celllm", "pc9")
    reader = store.reader("pc9")
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 30), reader.gene_ids))
    np.testing.assert_allclose(array.read_all(), direct, atol=1e-5)
    ensembl = [f"ENSG{i:011d}" for i in range(len(genes))]
    store.ingest(
        [write_sample(tmp_path / "e.tsv", counts[:5], ensembl, "e")],
        IngestOptions("ensembl", samples=["e"], labels=["sensitive"]),
    )
    with pytest.raises(InputError, match="celllm needs gene symbols"):
        store.embed("celllm", datasets="ensembl", checkpoint=checkpoint, device="cpu", **SHAPE)

"""scBERT on a small random PerformerLM in the published layout, with real PC9 cells.

The real 16,906-gene PanglaoDB panel ships with scBERT's data, not among the
vocabularies in tests/data; the panel here is the 2,000 most expressed PC9
symbols.
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
from scdrugmap.embed.models.scbert import ScBERTEmbedder
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256
from tests.data_files import top_expressed_genes, write_sample
from tests.performer_checkpoint import SHAPE
from tests.scbert_checkpoint import write_scbert_checkpoint

ROWS = np.r_[0:3, 750:777]
N_CELLS = len(ROWS)


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def panel(pc9_control: SourceTable) -> list[str]:
    return top_expressed_genes(pc9_control, 2000)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, panel: list[str]) -> Path:
    return write_scbert_checkpoint(tmp_path_factory.mktemp("scbert") / "model", panel)


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> ScBERTEmbedder:
    return ScBERTEmbedder.load(checkpoint, **SHAPE)


@pytest.fixture(scope="module")
def embedding(embedder: ScBERTEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def test_embeddings_have_the_model_width(embedder, embedding) -> None:
    assert embedder.dim == 32 and embedding.shape == (N_CELLS, 32)
    assert np.isfinite(embedding).all()


def test_binning_follows_the_reference_preprocessing(embedder: ScBERTEmbedder, panel) -> None:
    """log2(1 + count x 10^4 / total) on the panel, clipped at 5, truncated; a 0 appended."""
    genes = [panel[0], panel[1], panel[2], "NOT_IN_PANEL"]
    counts = sparse.csr_matrix(np.array([[1, 3, 9996, 500], [0, 0, 0, 7]]))
    batch = embedder.tokenize(counts, genes)
    assert batch.tokens.shape == (2, len(panel) + 1)
    first = batch.tokens[0]
    # 1 -> log2(2) = 1; 3 -> log2(4) = 2; 9996 -> log2(9997) > 5, clipped to 5
    assert first[:3].tolist() == [1, 2, 5]
    assert first[3:].sum() == 0 and first[-1] == 0
    assert (batch.tokens[1] == 0).all()


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    checkpoint: Path, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small = ScBERTEmbedder.load(checkpoint, max_cells=3, **SHAPE)
    chunks = [small.embed(small.tokenize(counts[i : i + 7], genes)) for i in range(0, N_CELLS, 7)]
    np.testing.assert_allclose(np.vstack(chunks), embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    np.testing.assert_allclose(
        small.embed(small.tokenize(counts[order], genes)), embedding[order], atol=1e-5
    )


def test_poolings_read_the_same_encodings(checkpoint: Path, embedder, pc9) -> None:
    counts, genes = pc9
    batch = embedder.tokenize(counts[:2], genes)
    with torch.no_grad():
        hidden = embedder.model(torch.from_numpy(batch.tokens)).numpy()
    np.testing.assert_allclose(embedder.embed(batch), hidden.mean(1), atol=1e-5)
    last = ScBERTEmbedder.load(checkpoint, pooling="last", **SHAPE)
    np.testing.assert_allclose(last.embed(batch), hidden[:, -1], atol=1e-5)
    expressed = ScBERTEmbedder.load(checkpoint, pooling="expressed", **SHAPE)
    keep = batch.tokens[0] > 0
    np.testing.assert_allclose(expressed.embed(batch)[0], hidden[0][keep].mean(0), atol=1e-5)


def test_favor_features_come_from_the_checkpoint(checkpoint: Path, embedder) -> None:
    state = torch.load(checkpoint / "panglao_pretrain.pth", weights_only=True)["model_state_dict"]
    key = "performer.net.layers.1.0.fn.fast_attention.projection_matrix"
    loaded = embedder.model.performer.net.layers[1][0].fn.fast_attention.projection_matrix
    torch.testing.assert_close(loaded, state[key])


class _Shell:
    """Anything a restricted loader must refuse."""


def test_bad_checkpoints_and_options_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="pooling"):
        ScBERTEmbedder.load(checkpoint, pooling="cls", **SHAPE)
    with pytest.raises(InputError, match="shapes do not fit"):
        ScBERTEmbedder.load(checkpoint, heads=4, dim_head=16)
    folder = tmp_path / "broken"
    shutil.copytree(checkpoint, folder)
    with (folder / "panglao_pretrain.pth").open("wb") as handle:
        pickle.dump({"model_state_dict": _Shell()}, handle)
    with pytest.raises(InputError, match="not a plain weights file"):
        ScBERTEmbedder.load(folder, **SHAPE)
    (folder / "gene_panel.txt").unlink()
    with pytest.raises(InputError, match="gene_panel=PATH"):
        ScBERTEmbedder.load(folder, **SHAPE)


def test_store_embed_end_to_end(checkpoint: Path, pc9, tmp_path: Path, embedder) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:15], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[15:30], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("scbert", checkpoint=checkpoint, chunk_size=10, device="cpu", **SHAPE)
    array = store.embedding_array("scbert", "pc9")
    reader = store.reader("pc9")
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 30), reader.gene_ids))
    np.testing.assert_allclose(array.read_all(), direct, atol=1e-5)
    assert array.attrs["weights_sha256"] == file_sha256(checkpoint / "panglao_pretrain.pth")
    ensembl = [f"ENSG{i:011d}" for i in range(len(genes))]
    store.ingest(
        [write_sample(tmp_path / "e.tsv", counts[:5], ensembl, "e")],
        IngestOptions("ensembl", samples=["e"], labels=["sensitive"]),
    )
    with pytest.raises(InputError, match="scbert needs gene symbols"):
        store.embed("scbert", datasets="ensembl", checkpoint=checkpoint, device="cpu", **SHAPE)

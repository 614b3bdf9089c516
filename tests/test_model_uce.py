"""UCE on a small random checkpoint directory in the published layout, with real PC9 cells."""

from __future__ import annotations

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
from scdrugmap.embed.models.uce import TOKENS, UCEEmbedder
from scdrugmap.errors import InputError
from tests.data_files import write_sample
from tests.uce_checkpoint import write_uce_checkpoint

ROWS = np.r_[0:1, 750:761]
N_CELLS = len(ROWS)


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, pc9) -> Path:
    """Protein embeddings for nine in ten of the PC9 genes."""
    symbols = [g for i, g in enumerate(pc9[1]) if i % 10]
    return write_uce_checkpoint(tmp_path_factory.mktemp("uce") / "model_files", symbols)


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> UCEEmbedder:
    return UCEEmbedder.load(checkpoint)


@pytest.fixture(scope="module")
def embedding(embedder: UCEEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def _cell(batch, i: int) -> np.ndarray:
    return batch.ids[batch.offsets[i] : batch.offsets[i + 1]]


def test_embeddings_are_unit_length_cls_outputs(embedder: UCEEmbedder, embedding) -> None:
    assert embedder.dim == 24 and embedding.shape == (N_CELLS, 24)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-6)


def test_sentences_are_framed_by_chromosome_in_genome_order(
    checkpoint: Path, embedder: UCEEmbedder, pc9
) -> None:
    table = embedder.tokenizer.table
    batch = embedder.tokenize(*pc9)
    token_gene = {v: k for k, v in table.tokens.items()}
    for i in range(3):
        ids = _cell(batch, i)
        assert ids[0] == TOKENS["cls"]
        assert (ids[1:] != TOKENS["pad"]).all()
        opens = np.flatnonzero(ids >= TOKENS["chrom_offset"])
        closes = np.flatnonzero(ids == TOKENS["chrom_right"])
        assert len(opens) == len(closes) and len(ids) == 1 + 1024 + 2 * len(opens)
        for start, stop in zip(opens, closes):
            genes = [token_gene[t] for t in ids[start + 1 : stop]]
            assert {table.chroms[g] for g in genes} == {ids[start] - TOKENS["chrom_offset"]}
            starts = [table.starts[g] for g in genes]
            assert starts == sorted(starts)
        assert len(set(ids[opens])) == len(opens)  # each chromosome appears once


def test_sampling_follows_log1p_weights_and_is_seeded_by_the_cell(
    checkpoint: Path, embedder: UCEEmbedder
) -> None:
    genes = sorted(embedder.tokenizer.table.tokens)[:3]
    counts = sparse.csr_matrix(np.array([[1, 0, 20], [1, 0, 20]]))
    many = UCEEmbedder.load(checkpoint, sample_size=20_000, pad_length=20_100)
    ids = _cell(many.tokenize(counts, genes), 0)
    table = many.tokenizer.table
    share = np.mean(ids == table.tokens[genes[0]]) * len(ids) / 20_000
    assert share == pytest.approx(np.log1p(1) / (np.log1p(1) + np.log1p(20)), abs=0.02)
    assert not (ids == table.tokens[genes[1]]).any()  # a zero count is never drawn
    twice = embedder.tokenize(counts, genes)
    np.testing.assert_array_equal(_cell(twice, 0), _cell(twice, 1))
    reseeded = UCEEmbedder.load(checkpoint, seed=3).tokenize(counts, genes)
    assert not np.array_equal(_cell(reseeded, 0), _cell(twice, 0))


def test_network_matches_torch_transformer_layers(
    checkpoint: Path, embedder: UCEEmbedder, pc9, embedding: np.ndarray
) -> None:
    """torch.nn's encoder layers (sequence-first, as the reference) with the same weights."""
    state = torch.load(checkpoint / "4layer_model.torch", weights_only=True)
    layer = nn.TransformerEncoderLayer(40, 20, 64, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    prefix = "transformer_encoder."
    encoder.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    encoder.eval()
    model = embedder.model
    batch = embedder.tokenize(*pc9)
    with torch.no_grad():
        for i in range(2):
            ids = torch.from_numpy(_cell(batch, i))[:, None]
            tokens = nn.functional.normalize(model.pe_embedding(ids), dim=2)
            hidden = model.encoder(tokens) * 40**0.5 + state["pos_encoder.pe"][: len(ids)]
            cls = model.decoder(encoder(hidden)[0])
            expected = nn.functional.normalize(cls, dim=1)[0].numpy()
            np.testing.assert_allclose(embedding[i], expected, atol=1e-5)


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    checkpoint: Path, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small = UCEEmbedder.load(checkpoint, max_tokens=2500, max_cells=2)
    chunks = [small.embed(small.tokenize(counts[i : i + 5], genes)) for i in range(0, N_CELLS, 5)]
    np.testing.assert_allclose(np.vstack(chunks), embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    np.testing.assert_allclose(
        small.embed(small.tokenize(counts[order], genes)), embedding[order], atol=1e-5
    )


def test_a_cell_without_known_genes_keeps_a_zero_row(embedder: UCEEmbedder, pc9) -> None:
    counts, genes = pc9
    with_empty = sparse.vstack([counts[:2], sparse.csr_matrix((1, counts.shape[1])), counts[2:4]])
    batch = embedder.tokenize(with_empty.tocsr(), genes)
    assert batch.lengths[2] == 0 and (batch.lengths[[0, 1, 3, 4]] > 0).all()
    rows = embedder.embed(batch)
    assert (rows[2] == 0).all()
    np.testing.assert_allclose(
        rows[[0, 1, 3, 4]], embedder.embed(embedder.tokenize(counts[:4], genes)), atol=1e-5
    )


class _Shell:
    """Anything a restricted loader must refuse."""


def test_bad_inputs_are_refused(checkpoint: Path, tmp_path: Path, embedder: UCEEmbedder) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(checkpoint, folder)
    with (folder / "4layer_model.torch").open("wb") as handle:
        pickle.dump({"encoder.0.weight": _Shell()}, handle)
    with pytest.raises(InputError, match="not a plain weights file"):
        UCEEmbedder.load(folder)
    (folder / "4layer_model.torch").unlink()
    with pytest.raises(InputError, match=r"no 4layer_model\.torch or 33l"):
        UCEEmbedder.load(folder)
    with pytest.raises(InputError, match="species"):
        UCEEmbedder.load(checkpoint, species="yeast")


def test_store_embed_end_to_end(checkpoint: Path, pc9, tmp_path: Path, embedder) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:6], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[6:12], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("uce", checkpoint=checkpoint, chunk_size=5, device="cpu")
    array = store.embedding_array("uce", "pc9")
    reader = store.reader("pc9")
    stored = reader.read_rows(0, 12)
    # The authors' default filter: genes expressed in fewer than 10 of the 12 cells go.
    common = np.asarray((stored > 0).sum(axis=0)).ravel() >= 10
    filtered = sparse.csr_matrix(stored.multiply(common[None, :]))
    direct = embedder.embed(embedder.tokenize(filtered, reader.gene_ids))
    np.testing.assert_allclose(array.read_all(), direct, atol=1e-5)
    store.embed(
        "uce", key="uce-all", checkpoint=checkpoint, chunk_size=5, device="cpu", filter=False
    )
    unfiltered = embedder.embed(embedder.tokenize(stored, reader.gene_ids))
    assert not np.allclose(direct, unfiltered, atol=1e-3)
    np.testing.assert_allclose(
        store.embedding_array("uce-all", "pc9").read_all(), unfiltered, atol=1e-5
    )
    assert array.attrs["settings"]["padding"] == "masked"
    ensembl = [f"ENSG{i:011d}" for i in range(len(genes))]
    store.ingest(
        [write_sample(tmp_path / "e.tsv", counts[:4], ensembl, "e")],
        IngestOptions("ensembl", samples=["e"], labels=["sensitive"]),
    )
    with pytest.raises(InputError, match="uce needs gene symbols"):
        store.embed("uce", datasets="ensembl", checkpoint=checkpoint, device="cpu")

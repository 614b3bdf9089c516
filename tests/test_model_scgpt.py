"""scGPT on a small random checkpoint in the published layout, with the real census vocabulary."""

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
from scdrugmap.embed.models.scgpt import CellGenes, ScGPTEmbedder, digitize_within_cells
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256
from tests.data_files import write_sample
from tests.scgpt_checkpoint import write_scgpt_checkpoint

# The file lists cells largest first: four cells far above 1,200 genes, then typical ones.
ROWS = np.r_[0:4, 750:866]
N_CELLS = len(ROWS)


@pytest.fixture(scope="module")
def census(real_data: Path) -> Path:
    return real_data / "vocab" / "scgpt" / "default_census_vocab.json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, census: Path) -> Path:
    return write_scgpt_checkpoint(tmp_path_factory.mktemp("scgpt") / "flash", census)


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> ScGPTEmbedder:
    return ScGPTEmbedder.load(checkpoint)


@pytest.fixture(scope="module")
def embedding(embedder: ScGPTEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def _cell(batch, i: int) -> tuple[np.ndarray, np.ndarray]:
    start, stop = batch.offsets[i], batch.offsets[i + 1]
    return batch.ids[start:stop], batch.values[start:stop]


def test_embeddings_are_unit_length_cls_outputs(embedder: ScGPTEmbedder, embedding) -> None:
    assert embedder.dim == 32
    assert embedding.shape == (N_CELLS, 32)
    assert embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-6)


def test_binning_matches_numpy_quantiles_and_digitize_cell_by_cell(pc9) -> None:
    """The reference rule written plainly, one cell at a time, as the oracle."""
    counts, _ = pc9
    counts = sparse.csr_matrix(counts[:, :6000], dtype=np.float32)
    counts.eliminate_zeros()
    per_cell = np.diff(counts.indptr)
    cells = np.repeat(np.arange(counts.shape[0]), per_cell)
    genes = CellGenes(counts.indices.astype(np.int64), counts.data, cells, per_cell)
    draws = np.random.default_rng(0).random(len(cells))
    digits = digitize_within_cells(genes, 51, draws)
    for i in range(counts.shape[0]):
        start, stop = counts.indptr[i], counts.indptr[i + 1]
        row = counts.data[start:stop]
        edges = np.quantile(row, np.linspace(0, 1, 50))
        left, right = np.digitize(row, edges), np.digitize(row, edges, right=True)
        expected = np.ceil(draws[start:stop] * (right - left) + left).astype(np.int64)
        np.testing.assert_array_equal(digits[start:stop], expected)


def test_hand_made_cells_give_the_exact_input(embedder: ScGPTEmbedder) -> None:
    vocab = embedder.tokenizer.vocab
    symbols = sorted(g for g in vocab if g.isalpha() and g.isupper())[:60]
    genes = [*symbols, "NOT_A_GENE"]
    dense = np.zeros((3, len(genes)), dtype=np.float32)
    dense[0, :50] = np.arange(1, 51)  # 50 distinct values: each is its own quantile edge
    dense[0, 60] = 9.0  # unknown to the vocabulary: dropped
    dense[2, 55] = 7.0  # a single gene: one value against 50 equal edges
    batch = embedder.tokenize(sparse.csr_matrix(dense), genes)
    ids, values = _cell(batch, 0)
    assert ids[0] == vocab["<cls>"] and values[0] == -2
    np.testing.assert_array_equal(ids[1:], [vocab[g] for g in symbols[:50]])
    np.testing.assert_array_equal(values[1:], np.arange(1, 51))
    assert batch.lengths[1] == 0
    ids, values = _cell(batch, 2)
    assert ids.tolist() == [vocab["<cls>"], vocab[symbols[55]]]
    assert 1 <= values[1] <= 50
    assert (embedder.embed(batch)[1] == 0).all()


def test_long_cells_keep_a_seeded_subset(checkpoint: Path, embedder: ScGPTEmbedder, pc9) -> None:
    counts, genes = pc9
    short = ScGPTEmbedder.load(checkpoint, max_length=300)
    batch = short.tokenize(counts[:4], genes)
    assert (batch.lengths == 300).all()
    full = embedder.tokenizer.expressed(counts[:4], genes)
    for i in range(4):
        ids, _ = _cell(batch, i)
        assert set(ids[1:]) <= set(full.tokens[full.cells == i])
        assert len(set(ids[1:])) == 299
    again = short.tokenize(counts[[3, 2, 1, 0]], genes)
    np.testing.assert_array_equal(_cell(again, 0)[0], _cell(batch, 3)[0])
    reseeded = ScGPTEmbedder.load(checkpoint, max_length=300, seed=7)
    assert set(_cell(reseeded.tokenize(counts[:1], genes), 0)[0]) != set(_cell(batch, 0)[0])


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    checkpoint: Path, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small_batches = ScGPTEmbedder.load(checkpoint, max_tokens=3000, max_cells=3)
    chunks = [
        small_batches.embed(small_batches.tokenize(counts[i : i + 37], genes))
        for i in range(0, N_CELLS, 37)
    ]
    np.testing.assert_allclose(np.vstack(chunks), embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    shuffled = small_batches.embed(small_batches.tokenize(counts[order], genes))
    np.testing.assert_allclose(shuffled, embedding[order], atol=1e-5)


def _plain_pytorch_encoder(checkpoint: Path) -> nn.TransformerEncoder:
    """torch.nn's post-norm encoder with the checkpoint's layers: the reference's CPU path."""
    state = torch.load(checkpoint / "best_model.pt", weights_only=True)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    prefix = "transformer_encoder."
    layers = {
        k.removeprefix(prefix).replace("self_attn.Wqkv.", "self_attn.in_proj_"): v
        for k, v in state.items()
        if k.startswith(prefix)
    }
    encoder.load_state_dict(layers)
    return encoder.eval()


def test_the_network_matches_torch_transformer_encoder(
    checkpoint: Path, embedder: ScGPTEmbedder, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    batch = embedder.tokenize(counts[4:7], genes)
    encoder = _plain_pytorch_encoder(checkpoint)
    model = embedder.model
    with torch.no_grad():
        for i in range(3):
            ids, values = (torch.from_numpy(a)[None] for a in _cell(batch, i))
            inputs = model.encoder(ids) + model.value_encoder(values)
            cls = encoder(inputs)[0, 0]
            np.testing.assert_allclose(embedding[4 + i], (cls / cls.norm()).numpy(), atol=1e-5)


def test_plain_pytorch_layout_gives_the_same_embedding(
    census: Path, tmp_path: Path, pc9, embedding: np.ndarray
) -> None:
    folder = write_scgpt_checkpoint(tmp_path / "plain", census, flash_layout=False)
    keys = torch.load(folder / "best_model.pt", weights_only=True)
    assert "transformer_encoder.layers.0.self_attn.in_proj_weight" in keys
    plain = ScGPTEmbedder.load(folder)
    np.testing.assert_allclose(plain.embed(plain.tokenize(*pc9)), embedding, atol=1e-6)


class _Shell:
    """Anything a restricted loader must refuse: unpickling it would build an arbitrary object."""


def test_bad_checkpoints_are_refused(checkpoint: Path, tmp_path: Path, census: Path) -> None:
    folder = tmp_path / "tampered"
    shutil.copytree(checkpoint, folder)
    with (folder / "best_model.pt").open("wb") as handle:
        pickle.dump({"encoder.embedding.weight": _Shell()}, handle)
    with pytest.raises(InputError, match="not a plain weights file"):
        ScGPTEmbedder.load(folder)
    other = write_scgpt_checkpoint(tmp_path / "other", census)
    (other / "vocab.json").write_text('{"A": 0, "B": 1}')
    with pytest.raises(InputError, match="different models"):
        ScGPTEmbedder.load(other)
    (other / "args.json").unlink()
    with pytest.raises(InputError, match=r"no args\.json"):
        ScGPTEmbedder.load(other)


def test_options_are_checked(checkpoint: Path) -> None:
    with pytest.raises(InputError, match="unknown option"):
        ScGPTEmbedder.load(checkpoint, pooling="mean")
    with pytest.raises(InputError, match="max_length"):
        ScGPTEmbedder.load(checkpoint, max_length="1")
    with pytest.raises(InputError, match="precision"):
        ScGPTEmbedder.load(checkpoint, precision="int8")


def test_vocabulary_is_the_census_symbols(embedder: ScGPTEmbedder) -> None:
    vocabulary = embedder.gene_vocabulary()
    assert {"GAPDH", "ACTB", "EGFR"} <= vocabulary
    assert not {"<pad>", "<cls>", "<eoc>"} & vocabulary
    assert embedder.provenance()["settings"]["max_length"] == 1200


def test_store_embed_end_to_end(
    checkpoint: Path, pc9, tmp_path: Path, embedder: ScGPTEmbedder
) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:50], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[50:100], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("scgpt", checkpoint=checkpoint, chunk_size=30, device="cpu")
    array = store.embedding_array("scgpt", "pc9")
    values = array.read_all()
    reader = store.reader("pc9")
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 100), reader.gene_ids))
    np.testing.assert_allclose(values, direct, atol=1e-5)
    assert array.attrs["weights_sha256"] == file_sha256(checkpoint / "best_model.pt")
    assert array.attrs["settings"]["n_bins"] == 51
    assert array.read_coverage().min() > 0.5


def test_ensembl_ids_are_refused(checkpoint: Path, pc9, tmp_path: Path) -> None:
    counts, genes = pc9
    ensembl = [f"ENSG{i:011d}" for i in range(len(genes))]
    files = [write_sample(tmp_path / "a.tsv", counts[:30], ensembl, "a")]
    store = Store(tmp_path / "store")
    store.ingest(files, IngestOptions("ensembl", samples=["a"], labels=["sensitive"]))
    with pytest.raises(InputError, match="scgpt needs gene symbols"):
        store.embed("scgpt", checkpoint=checkpoint, device="cpu")

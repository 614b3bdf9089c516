"""Geneformer on a small random checkpoint in the published layout, with the real dictionaries."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from transformers import BertForMaskedLM

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.readers import SourceTable, read_matrix_file
from scdrugmap.embed.models.geneformer import GeneformerEmbedder, GeneformerTokenizer
from scdrugmap.embed.safe_pickle import load_plain_dictionary
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256
from tests.data_files import write_sample
from tests.geneformer_checkpoint import PICKLES, write_geneformer_checkpoint

# The files list cells largest first: four cells long enough to be truncated, then typical ones.
ROWS = np.r_[0:4, 750:906]
N_CELLS = len(ROWS)


@pytest.fixture(scope="module")
def vocab(real_data: Path) -> Path:
    return real_data / "vocab" / "geneformer_v1"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, vocab: Path) -> Path:
    return write_geneformer_checkpoint(tmp_path_factory.mktemp("gf") / "v1", vocab)


@pytest.fixture(scope="module")
def bin_checkpoint(checkpoint: Path, tmp_path_factory) -> Path:
    """The same weights as the published `pytorch_model.bin` (no safetensors file)."""
    folder = tmp_path_factory.mktemp("gf") / "v1-bin"
    shutil.copytree(checkpoint, folder)
    (folder / "model.safetensors").unlink()
    state = BertForMaskedLM.from_pretrained(checkpoint).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def v2_checkpoint(tmp_path_factory, vocab: Path) -> Path:
    tokens = load_plain_dictionary(vocab / "token_dictionary.pkl")
    tokens.update({"<cls>": len(tokens), "<eos>": len(tokens) + 1})
    return write_geneformer_checkpoint(tmp_path_factory.mktemp("gf") / "v2", vocab, tokens)


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> GeneformerEmbedder:
    return GeneformerEmbedder.load(checkpoint)


@pytest.fixture(scope="module")
def reference_embedding(embedder: GeneformerEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def _rank_like_the_reference(tokenizer: GeneformerTokenizer, counts, genes) -> list[np.ndarray]:
    """The reference's rule written plainly, one dense cell at a time (a test oracle)."""
    ids = [tokenizer.ensembl_id(g) for g in genes]
    columns = np.array([j for j, i in enumerate(ids) if i is not None])
    tokens = np.array([tokenizer.token_dictionary[ids[j]] for j in columns])
    medians = np.array([tokenizer.medians[ids[j]] for j in columns])
    dense = counts.toarray().astype(np.float64)
    normalised = dense[:, columns] / dense.sum(1, keepdims=True) * 10_000 / medians
    cells = []
    for row in normalised:
        nonzero = np.nonzero(row)[0]
        order = np.argsort(-row[nonzero])
        cells.append(tokens[nonzero][order][: tokenizer.model_input_size])
    return cells


def test_embeddings_have_the_model_width_and_are_finite(
    embedder: GeneformerEmbedder, reference_embedding: np.ndarray
) -> None:
    assert embedder.dim == 64
    assert reference_embedding.shape == (N_CELLS, 64)
    assert reference_embedding.dtype == np.float32
    assert np.isfinite(reference_embedding).all()
    assert np.abs(reference_embedding).sum(1).min() > 0
    assert np.unique(reference_embedding.round(5), axis=0).shape[0] == N_CELLS


def test_real_cells_are_ranked_as_the_reference_ranks_them(
    embedder: GeneformerEmbedder, pc9
) -> None:
    counts, genes = pc9
    batch = embedder.tokenize(counts, genes)
    expected = _rank_like_the_reference(embedder.tokenizer, counts, genes)
    assert len(batch.lengths) == N_CELLS
    assert batch.lengths[:4].tolist() == [2048] * 4  # truncated to the model's input size
    for i, cell in enumerate(expected):
        np.testing.assert_array_equal(batch.cell(i), cell)


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    embedder: GeneformerEmbedder, pc9, reference_embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small = GeneformerEmbedder(
        embedder.model,
        embedder.tokenizer,
        embedder.device,
        embedder.settings,
        {"max_tokens": 1500, "max_cells": 3},
        "x",
        dim=embedder.dim,
    )
    chunked = np.vstack(
        [small.embed(small.tokenize(counts[a:b], genes)) for a, b in ((0, 37), (37, N_CELLS))]
    )
    np.testing.assert_allclose(chunked, reference_embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    shuffled = embedder.embed(embedder.tokenize(counts[order], genes))
    np.testing.assert_allclose(shuffled, reference_embedding[order], atol=1e-5)


def test_penultimate_layer_mean_matches_a_plain_transformers_forward(
    checkpoint: Path, embedder: GeneformerEmbedder, pc9, reference_embedding: np.ndarray
) -> None:
    counts, genes = pc9
    batch = embedder.tokenize(counts[:2], genes)
    model = BertForMaskedLM.from_pretrained(checkpoint).eval()
    last = GeneformerEmbedder.load(checkpoint, emb_layer=0)
    with torch.no_grad():
        for i in range(2):
            hidden = model(
                torch.from_numpy(batch.cell(i))[None], output_hidden_states=True
            ).hidden_states
            assert len(hidden) == 3
            np.testing.assert_allclose(reference_embedding[i], hidden[1][0].mean(0), atol=1e-5)
            np.testing.assert_allclose(
                last.embed(batch)[i], hidden[2][0].mean(0).numpy(), atol=1e-5
            )


def test_pytorch_model_bin_gives_the_same_embedding(
    bin_checkpoint: Path, pc9, reference_embedding: np.ndarray
) -> None:
    loaded = GeneformerEmbedder.load(bin_checkpoint)
    counts, genes = pc9
    np.testing.assert_allclose(
        loaded.embed(loaded.tokenize(counts[:20], genes)), reference_embedding[:20], atol=1e-6
    )
    assert loaded.provenance()["weights_sha256"] == file_sha256(
        bin_checkpoint / "pytorch_model.bin"
    )


def _two_equal_median_genes(tokenizer: GeneformerTokenizer) -> tuple[str, str]:
    by_median: dict[float, str] = {}
    for gene, median in tokenizer.medians.items():
        if median in by_median:
            return by_median[median], gene
        by_median[median] = gene
    raise AssertionError("the real median dictionary has repeated medians")


def test_hand_made_cells_give_the_exact_token_sequences(embedder: GeneformerEmbedder) -> None:
    tokenizer = embedder.tokenizer
    token, median = tokenizer.token_dictionary, tokenizer.medians
    tie_a, tie_b = _two_equal_median_genes(tokenizer)
    symbol = "GAPDH"
    gapdh = tokenizer.names[symbol]
    genes = [tie_b, "NOT_A_GENE", symbol, tie_a, "ENSG00000000003.14"]
    counts = sparse.csr_matrix(
        np.array(
            [
                [2, 50, 0, 2, 0],  # a tie keeps the data's column order; unknown genes dropped
                [0, 0, 0, 0, 0],  # nothing expressed: no tokens
                [1, 0, 7, 0, 3],  # a symbol and a versioned Ensembl ID
            ],
            dtype=np.float32,
        )
    )
    batch = tokenizer(counts, genes)
    assert batch.cell(0).tolist() == [token[tie_b], token[tie_a]]
    assert batch.cell(1).tolist() == []
    scores = {
        token[tie_b]: 1 / median[tie_b],
        token[gapdh]: 7 / median[gapdh],
        token["ENSG00000000003"]: 3 / median["ENSG00000000003"],
    }
    assert batch.cell(2).tolist() == sorted(scores, key=scores.get, reverse=True)
    assert np.all(embedder.embed(batch)[1] == 0)


def test_ties_are_ordered_as_the_reference_sort_orders_them() -> None:
    genes = [f"ENSG{i:011d}" for i in range(40)]
    tokens = {g: 100 + i for i, g in enumerate(genes)}
    tokenizer = GeneformerTokenizer(tokens, dict.fromkeys(genes, 1.0), {}, 2048)
    values = np.random.default_rng(0).integers(1, 4, size=(3, 40)).astype(np.float64)
    batch = tokenizer(sparse.csr_matrix(values), genes)
    for i, row in enumerate(values):
        expected = np.array(list(tokens.values()))[np.argsort(-(row / row.sum() * 10_000))]
        np.testing.assert_array_equal(batch.cell(i), expected)


def test_a_symbol_and_its_ensembl_id_are_summed_into_one_gene(
    embedder: GeneformerEmbedder,
) -> None:
    tokenizer = embedder.tokenizer
    genes = ["GAPDH", "ACTB", tokenizer.names["GAPDH"]]
    gapdh, actb = (tokenizer.token_dictionary[tokenizer.names[g]] for g in ("GAPDH", "ACTB"))
    ratio = tokenizer.medians[tokenizer.names["GAPDH"]] / tokenizer.medians[tokenizer.names["ACTB"]]
    # ACTB's count puts it between GAPDH's two parts and their sum.
    actb_count = 1.5 * ratio * 4
    counts = sparse.csr_matrix(np.array([[4.0, actb_count, 4.0]]))
    assert tokenizer(counts, genes).cell(0).tolist() == [gapdh, actb]


def test_truncation_and_v2_special_tokens(embedder: GeneformerEmbedder) -> None:
    real = embedder.tokenizer
    genes = ["ACTB", "GAPDH", "MT-CO1", "EEF1A1"]
    counts = sparse.csr_matrix(np.array([[10, 3, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    full = real(counts, genes).cell(0).tolist()
    assert len(full) == 3
    v1 = GeneformerTokenizer(real.token_dictionary, real.medians, real.names, 2)
    assert v1(counts, genes).cell(0).tolist() == full[:2]
    v2_tokens = {**real.token_dictionary, "<cls>": 90_000, "<eos>": 90_001}
    v2 = GeneformerTokenizer(v2_tokens, real.medians, real.names, 4)
    batch = v2(counts, genes)
    assert batch.cell(0).tolist() == [90_000, *full[:2], 90_001]
    assert batch.cell(1).tolist() == [90_000, 90_001]


def test_v2_mean_leaves_out_special_tokens_and_cls_pooling(v2_checkpoint: Path, pc9) -> None:
    counts, genes = pc9
    mean = GeneformerEmbedder.load(v2_checkpoint)
    cls = GeneformerEmbedder.load(v2_checkpoint, pooling="cls")
    batch = mean.tokenize(counts[:3], genes)
    assert mean.provenance()["settings"]["special_tokens"] is True
    model = BertForMaskedLM.from_pretrained(v2_checkpoint).eval()
    with torch.no_grad():
        hidden = model(torch.from_numpy(batch.cell(0))[None], output_hidden_states=True)
    penultimate = hidden.hidden_states[1][0]
    np.testing.assert_allclose(mean.embed(batch)[0], penultimate[1:-1].mean(0), atol=1e-5)
    np.testing.assert_allclose(cls.embed(batch)[0], penultimate[0], atol=1e-5)


def test_options_are_checked(checkpoint: Path) -> None:
    with pytest.raises(InputError, match="pooling=cls needs a V2"):
        GeneformerEmbedder.load(checkpoint, pooling="cls")
    with pytest.raises(InputError, match="emb_layer=-3"):
        GeneformerEmbedder.load(checkpoint, emb_layer=-3)
    with pytest.raises(InputError, match="unknown option"):
        GeneformerEmbedder.load(checkpoint, poolng="mean")
    with pytest.raises(InputError, match="precision"):
        GeneformerEmbedder.load(checkpoint, precision="float8")


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo tampered",))


def test_tampered_dictionary_and_weights_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "token_dictionary.pkl"
    tampered.write_bytes(pickle.dumps({"<pad>": _Shell()}))
    with pytest.raises(InputError, match="refusing to load"):
        GeneformerEmbedder.load(checkpoint, token_dictionary=str(tampered))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in (*PICKLES, "config.json"):
        shutil.copy(checkpoint / name, folder / name)
    torch.save({"bert.embeddings.word_embeddings.weight": _Shell()}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="not a plain weights file"):
        GeneformerEmbedder.load(folder)


def test_missing_dictionary_names_the_option(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="gene_median_dictionary=PATH"):
        GeneformerEmbedder.load(checkpoint, gene_median_dictionary=str(tmp_path / "none.pkl"))


def test_vocabulary_knows_ensembl_ids_and_symbols(embedder: GeneformerEmbedder) -> None:
    vocabulary = embedder.gene_vocabulary()
    assert {"ENSG00000000003", "GAPDH", "ACTB"} <= vocabulary
    assert "<pad>" not in vocabulary


def test_store_embed_end_to_end(
    checkpoint: Path, pc9, tmp_path: Path, embedder: GeneformerEmbedder
) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:60], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[60:120], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("geneformer", checkpoint=checkpoint, chunk_size=25, device="cpu")
    array = store.embedding_array("geneformer", "pc9")
    values = array.read_all()
    assert values.shape == (120, 64)
    reader = store.reader("pc9")
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 120), reader.gene_ids))
    np.testing.assert_allclose(values, direct, atol=1e-5)
    assert array.attrs["weights_sha256"] == file_sha256(checkpoint / "model.safetensors")
    assert array.attrs["settings"]["emb_layer"] == -1
    assert array.read_coverage().min() > 0.5


def test_wrong_identifier_type_is_refused(checkpoint: Path, pc9, tmp_path: Path) -> None:
    counts, genes = pc9
    entrez = [str(10_000 + i) for i in range(len(genes))]
    files = [write_sample(tmp_path / "a.tsv", counts[:40], entrez, "a")]
    store = Store(tmp_path / "store")
    store.ingest(files, IngestOptions("entrez", samples=["a"], labels=["sensitive"]))
    with pytest.raises(InputError, match="geneformer needs Ensembl IDs or gene symbols"):
        store.embed("geneformer", checkpoint=checkpoint, device="cpu")


def _float32_loom_ranks(tokenizer: GeneformerTokenizer, counts, genes) -> list[np.ndarray]:
    """The reference's loom arithmetic on a float32 loom whose `n_counts` are float32: numpy
    divides and scales in float32, then divides by the float64 medians (a test oracle)."""
    ids = [tokenizer.ensembl_id(g) for g in genes]
    columns = np.array([j for j, i in enumerate(ids) if i is not None])
    tokens = np.array([tokenizer.token_dictionary[ids[j]] for j in columns])
    medians = np.array([tokenizer.medians[ids[j]] for j in columns])
    dense = counts.toarray().astype(np.float32)
    totals = dense.sum(1, dtype=np.float64).astype(np.float32)
    scaled = dense[:, columns] / totals[:, None] * 10_000
    assert scaled.dtype == np.float32
    normalised = scaled / medians
    cells = []
    for row in normalised:
        nonzero = np.nonzero(row)[0]
        cells.append(tokens[nonzero][np.argsort(-row[nonzero])][: tokenizer.model_input_size])
    return cells


def test_normalisation_is_float64_unless_float32_is_asked_for(
    checkpoint: Path, embedder: GeneformerEmbedder, real_data: Path
) -> None:
    """Genes whose normalised values nearly tie rank by the precision of the normalisation:
    float64 by default (the reference's loom with float64 `n_counts`), float32 on request.
    The first 80 erlotinib-surviving PC9 cells hold four such cells."""
    table = read_matrix_file(real_data / "pc9_erlotinib" / "Day11_Erlotinib.txt.gz")
    counts, genes = table.counts[:80], table.genes
    assert embedder.provenance()["settings"]["norm_precision"] == "float64"
    single = GeneformerEmbedder.load(checkpoint, norm_precision="float32")
    assert single.provenance()["settings"]["norm_precision"] == "float32"
    double_ids, single_ids = embedder.tokenize(counts, genes), single.tokenize(counts, genes)
    as_float64 = _rank_like_the_reference(embedder.tokenizer, counts, genes)
    as_float32 = _float32_loom_ranks(single.tokenizer, counts, genes)
    swapped = []
    for i in range(80):
        np.testing.assert_array_equal(double_ids.cell(i), as_float64[i])
        np.testing.assert_array_equal(single_ids.cell(i), as_float32[i])
        a, b = double_ids.cell(i), single_ids.cell(i)
        assert sorted(a.tolist()) == sorted(b.tolist())  # the same genes, ...
        if not np.array_equal(a, b):
            swapped.append(i)  # ... some near-tied ones in another order
    assert swapped == [0, 16, 56, 72]
    with pytest.raises(InputError, match="norm_precision"):
        GeneformerEmbedder.load(checkpoint, norm_precision="float16")

"""tGPT on a small random GPT-2 in the published layout, with the real word-level tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from transformers import GPT2LMHeadModel

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.models.tgpt import TGPTEmbedder
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256
from tests.data_files import write_sample
from tests.tgpt_checkpoint import write_tgpt_checkpoint

ROWS = np.r_[0:4, 750:846]
N_CELLS = len(ROWS)


@pytest.fixture(scope="module")
def vocab(real_data: Path) -> Path:
    return real_data / "vocab" / "tgpt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, vocab: Path) -> Path:
    return write_tgpt_checkpoint(tmp_path_factory.mktemp("tgpt") / "model", vocab)


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> TGPTEmbedder:
    return TGPTEmbedder.load(checkpoint)


@pytest.fixture(scope="module")
def embedding(embedder: TGPTEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


def test_sentences_have_the_form_of_the_published_cells(
    embedder: TGPTEmbedder, vocab: Path
) -> None:
    """val_cells.txt: 100 real cells as the reference wrote them. Rebuild each from counts
    spelled as data sets spell genes (HLA-B for HLA_B), with weaker genes to cut off."""
    lines = (vocab / "val_cells.txt").read_text().split("\n")
    lines = [line for line in lines if line]
    assert len(lines) == 100
    rng = np.random.default_rng(0)
    for line in lines:
        words = line.split()
        extra = [w for w in ("GAPDH", "ACTB", "MALAT1", "EGFR", "KRT7") if w not in words]
        genes = [w.replace("_", "-") for w in words] + extra + ["NOT_A_GENE", "ENSG00000141510"]
        counts = np.r_[np.arange(200, 200 - len(words), -1), np.ones(len(extra)), 500, 400]
        order = rng.permutation(len(genes))
        matrix = sparse.csr_matrix(counts[order][None, :])
        sentence = embedder.tokenizer.sentences(matrix, [genes[i] for i in order])[0]
        assert sentence == line


def test_hand_made_cell_gives_the_exact_token_ids(embedder: TGPTEmbedder) -> None:
    vocabulary = embedder.tokenizer.vocabulary
    genes = ["HLA-B", "GAPDH", "ACTB", "UNKNOWN1", "MT-CO1", "B2M"]
    counts = sparse.csr_matrix(np.array([[5, 9, 5, 100, 0, 7], [0, 0, 0, 3, 0, 0]]))
    batch = embedder.tokenize(counts, genes)
    expected = [
        vocabulary.bos_id,
        vocabulary.ids["GAPDH"],
        vocabulary.ids["B2M"],
        vocabulary.ids["HLA_B"],  # ties keep the data's column order
        vocabulary.ids["ACTB"],
        vocabulary.eos_id,
    ]
    assert batch.ids[: batch.offsets[1]].tolist() == expected
    assert batch.lengths[1] == 0
    assert (embedder.embed(batch)[1] == 0).all()


def test_sentences_are_cut_to_the_model_length(
    checkpoint: Path, embedder: TGPTEmbedder, pc9
) -> None:
    assert embedder.tokenize(*pc9).lengths.max() == 64
    shorter = TGPTEmbedder.load(checkpoint, max_length=10)
    assert shorter.tokenize(*pc9).lengths.max() == 10


def test_embedding_is_the_reference_mean_over_gene_tokens(
    checkpoint: Path, embedder: TGPTEmbedder, pc9, embedding: np.ndarray
) -> None:
    """The published GPT2LMHeadModel's transformer, one cell at a time, positions 1 .. n-2."""
    counts, genes = pc9
    batch = embedder.tokenize(counts[:3], genes)
    reference = GPT2LMHeadModel.from_pretrained(checkpoint).transformer.eval()
    with torch.no_grad():
        for i in range(3):
            ids = torch.from_numpy(batch.ids[batch.offsets[i] : batch.offsets[i + 1]])[None]
            hidden = reference(input_ids=ids).last_hidden_state[0]
            np.testing.assert_allclose(embedding[i], hidden[1:-1].mean(0).numpy(), atol=1e-5)


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    checkpoint: Path, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small = TGPTEmbedder.load(checkpoint, max_tokens=200, max_cells=3)
    chunks = [small.embed(small.tokenize(counts[i : i + 23], genes)) for i in range(0, N_CELLS, 23)]
    np.testing.assert_allclose(np.vstack(chunks), embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    np.testing.assert_allclose(
        small.embed(small.tokenize(counts[order], genes)), embedding[order], atol=1e-5
    )


def test_pytorch_model_bin_gives_the_same_embedding(
    vocab: Path, tmp_path: Path, pc9, embedding: np.ndarray
) -> None:
    folder = write_tgpt_checkpoint(tmp_path / "bin", vocab, safetensors=False)
    assert not (folder / "model.safetensors").exists()
    loaded = TGPTEmbedder.load(folder)
    np.testing.assert_allclose(loaded.embed(loaded.tokenize(*pc9)), embedding, atol=1e-6)


def test_bad_checkpoints_and_options_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="between 3 and the model's 64 positions"):
        TGPTEmbedder.load(checkpoint, max_length=65)
    with pytest.raises(InputError, match="unknown option"):
        TGPTEmbedder.load(checkpoint, pooling="last")
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    with pytest.raises(InputError, match="no tokenizer"):
        TGPTEmbedder.load(folder)
    (folder / "tokenizer.json").write_text('{"model": {"type": "BPE"}, "post_processor": {}}')
    with pytest.raises(InputError, match="word-level"):
        TGPTEmbedder.load(folder)


def test_vocabulary_accepts_the_data_spellings(embedder: TGPTEmbedder) -> None:
    vocabulary = embedder.gene_vocabulary()
    assert "HLA-B" in vocabulary and "HLA_B" in vocabulary and "GAPDH" in vocabulary
    assert "ENSG00000141510" not in vocabulary and "<pad>" not in vocabulary


def test_store_embed_end_to_end(
    checkpoint: Path, pc9, tmp_path: Path, embedder: TGPTEmbedder
) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:40], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[40:80], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("tgpt", checkpoint=checkpoint, chunk_size=25, device="cpu")
    array = store.embedding_array("tgpt", "pc9")
    reader = store.reader("pc9")
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 80), reader.gene_ids))
    np.testing.assert_allclose(array.read_all(), direct, atol=1e-5)
    assert array.attrs["weights_sha256"] == file_sha256(checkpoint / "model.safetensors")
    assert array.attrs["settings"]["max_length"] == 64


def test_ensembl_ids_are_refused(checkpoint: Path, pc9, tmp_path: Path) -> None:
    counts, genes = pc9
    ensembl = [f"ENSG{i:011d}" for i in range(len(genes))]
    store = Store(tmp_path / "store")
    store.ingest(
        [write_sample(tmp_path / "a.tsv", counts[:20], ensembl, "a")],
        IngestOptions("ensembl", samples=["a"], labels=["sensitive"]),
    )
    with pytest.raises(InputError, match="tgpt needs gene symbols"):
        store.embed("tgpt", checkpoint=checkpoint, device="cpu")

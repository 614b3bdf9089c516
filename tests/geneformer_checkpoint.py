"""A small random Geneformer checkpoint in the published layout, for tests and benchmarks.

The real config (tests/data/vocab/geneformer_v1) made narrow, BertForMaskedLM
weights saved as the authors save them, and the real dictionaries beside.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

SMALL = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
PICKLES = ("token_dictionary.pkl", "gene_median_dictionary.pkl", "gene_name_id_dict.pkl")


def write_geneformer_checkpoint(
    folder: Path, vocab: Path, token_dictionary: dict | None = None
) -> Path:
    """A random BertForMaskedLM in the published layout: the real config, shrunk."""
    folder.mkdir(parents=True)
    for name in PICKLES:
        shutil.copy(vocab / name, folder / name)
    if token_dictionary is not None:
        with (folder / "token_dictionary.pkl").open("wb") as handle:
            pickle.dump(token_dictionary, handle)
    settings = json.loads((vocab / "config.json").read_text())
    settings.update(SMALL, intermediate_size=128)
    if token_dictionary is not None:
        settings.update(vocab_size=len(token_dictionary), max_position_embeddings=4096)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**settings))
    model.save_pretrained(folder)
    return folder

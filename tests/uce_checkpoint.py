"""A small random UCE checkpoint directory in the published layout, for tests and benchmarks.

The published directory holds the model file (`4layer_model.torch`: the
whole TransformerModel state dict, token table included), `all_tokens.torch`
(143,574 protein and special tokens; the reference appends 1,895 seeded
chromosome tokens), `species_chrom.csv`, `species_offsets.pkl` and
`protein_embeddings/<species>...ESM2.pt` (gene symbol to ESM2 vector). Here
the token width is 16 instead of 5,120 and the network is small; the token
layout (special tokens, chromosome offset, 145,469 rows) is the real one.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from scdrugmap.embed.models.uce import (
    ALL_TOKENS,
    PROTEIN_FILES,
    TOKENS,
    UCEModel,
    full_block,
)

SHAPES = {"token_dim": 16, "d_model": 40, "d_hid": 64, "nlayers": 2, "output_dim": 24}
CHROMOSOMES = [str(c) for c in range(1, 23)] + ["X", "Y", "MT"]


def sinusoids(length: int, width: int) -> torch.Tensor:
    position = torch.arange(length).unsqueeze(1)
    scale = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
    table = torch.zeros(length, 1, width)
    table[:, 0, 0::2] = torch.sin(position * scale)
    table[:, 0, 1::2] = torch.cos(position * scale)
    return table


def write_uce_checkpoint(folder: Path, symbols: list[str], seed: int = 0) -> Path:
    """`symbols`: the human genes given protein embeddings (rows 0.. in this order)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = SHAPES["token_dim"]
    proteins = {s: torch.randn(dim, generator=generator) for s in symbols}
    (folder / "protein_embeddings").mkdir(exist_ok=True)
    torch.save(proteins, folder / "protein_embeddings" / PROTEIN_FILES["human"])
    with (folder / "species_offsets.pkl").open("wb") as handle:
        pickle.dump({"human": 4, "mouse": 4 + len(symbols)}, handle)
    human = pd.DataFrame(
        {
            "species": "human",
            "gene_symbol": symbols,
            "chromosome": rng.choice(CHROMOSOMES, len(symbols)),
            "start": rng.integers(1, 200_000_000, len(symbols)),
        }
    )
    mouse = pd.DataFrame(
        {"species": "mouse", "gene_symbol": ["Actb", "Gapdh"], "chromosome": ["5", "6"]}
    ).assign(start=[142_888_870, 125_138_678])
    pd.concat([mouse, human]).to_csv(folder / "species_chrom.csv", index=False)
    torch.save(
        torch.randn(TOKENS["chrom_offset"], dim, generator=generator), folder / "all_tokens.torch"
    )
    torch.manual_seed(seed)
    shapes = {**SHAPES, "n_tokens": ALL_TOKENS, "max_len": 1536}
    model = UCEModel(shapes, heads=20)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    tokens = torch.load(folder / "all_tokens.torch", weights_only=True)
    chrom = torch.normal(
        0.0, 1.0, size=(ALL_TOKENS - len(tokens), dim), generator=torch.Generator().manual_seed(23)
    )
    state["pe_embedding.weight"] = torch.vstack((tokens, chrom))
    state["pos_encoder.pe"] = sinusoids(1536, SHAPES["d_model"])
    out = SHAPES["output_dim"]
    extras = nn.ModuleDict(
        {
            "binary_decoder": nn.Sequential(
                full_block(out + 1280, 2048),
                full_block(2048, 512),
                full_block(512, 128),
                nn.Linear(128, 1),
            ),
            "gene_embedding_layer": nn.Sequential(
                nn.Linear(dim, SHAPES["d_model"]), nn.GELU(), nn.LayerNorm(SHAPES["d_model"])
            ),
        }
    )
    state.update(extras.state_dict())
    torch.save(state, folder / "4layer_model.torch")
    return folder

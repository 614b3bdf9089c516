"""A small random scBERT checkpoint in the published layout, for tests and benchmarks.

The published folder holds `panglao_pretrain.pth` (a training checkpoint:
`model_state_dict` of PerformerLM, with optimizer state and losses beside
it) and `gene2vec_16906.npy`; the 16,906-gene PanglaoDB panel comes with
scBERT's data (`panglao_10000.h5ad`), which is not among the vocabularies in
tests/data, so the panel here is a list of real PC9 gene symbols
(`gene_panel.txt`) and the network is small; key names, dtypes and the FAVOR+
buffers are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scdrugmap.embed.models.scbert import ScBERTModel
from tests.performer_checkpoint import SMALL, random_performer_state


def write_scbert_checkpoint(folder: Path, panel: list[str], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gene_panel.txt").write_text("\n".join(panel) + "\n")
    gene2vec = np.random.default_rng(seed).normal(size=(len(panel), SMALL["dim"]))
    np.save(folder / "gene2vec_16906.npy", gene2vec)
    state = random_performer_state(ScBERTModel, 7, gene2vec, (0.0,), seed)
    torch.save(
        {"epoch": 10, "model_state_dict": state, "optimizer_state_dict": {}, "losses": [0.5]},
        folder / "panglao_pretrain.pth",
    )
    return folder

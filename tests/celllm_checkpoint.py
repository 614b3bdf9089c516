"""A small random CellLM checkpoint in the published layout, for tests and benchmarks.

OpenBioMed publishes `checkpoint4_fixed.pth` (its `model_state_dict` is a
PerformerLM_CellLM) and `gene2vec_19379_512.npy`; its 19,379-gene panel is
not among the vocabularies in tests/data, so the panel here (`gene_panel.txt`)
is a list of real PC9 symbols and the network is small. Key names, the extra
CLS (ones) and PAD (zeros) position rows, float64 positions and the FAVOR+
buffers are the real layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scdrugmap.embed.models.celllm import CellLMModel
from tests.performer_checkpoint import SMALL, random_performer_state


def write_celllm_checkpoint(folder: Path, panel: list[str], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gene_panel.txt").write_text("\n".join(panel) + "\n")
    gene2vec = np.random.default_rng(seed).normal(size=(len(panel), SMALL["dim"]))
    np.save(folder / "gene2vec_19379_512.npy", gene2vec)
    state = random_performer_state(CellLMModel, 8, gene2vec, (1.0, 0.0), seed)
    torch.save({"model_state_dict": state}, folder / "checkpoint4_fixed.pth")
    return folder

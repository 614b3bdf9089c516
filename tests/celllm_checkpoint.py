"""A small random CellLM checkpoint in the published layout, for tests and benchmarks.

OpenBioMed publishes `checkpoint4_fixed.pth` (its `model_state_dict` is a
PerformerLM_CellLM) and `gene2vec_19379_512.npy`; its 19,379-gene panel is
not in ../shared, so the panel here (`gene_panel.txt`) is a list of real PC9
symbols and the network is small. Key names, the extra CLS (ones) and PAD
(zeros) position rows, float64 positions and the FAVOR+ buffers are the real
layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from scdrugmap.embed.models.celllm import CellLMModel

SMALL = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16}


def write_celllm_checkpoint(folder: Path, panel: list[str], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gene_panel.txt").write_text("\n".join(panel) + "\n")
    rng = np.random.default_rng(seed)
    gene2vec = rng.normal(size=(len(panel), SMALL["dim"]))
    np.save(folder / "gene2vec_19379_512.npy", gene2vec)
    features = int(SMALL["dim_head"] * math.log(SMALL["dim_head"]))
    shapes = {
        "num_tokens": 8,
        "dim": SMALL["dim"],
        "positions": len(panel) + 2,
        "features": features,
        "depth": SMALL["depth"],
    }
    torch.manual_seed(seed)
    model = CellLMModel(shapes, SMALL["heads"], SMALL["dim_head"])
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    extra = np.vstack((np.ones((1, SMALL["dim"])), np.zeros((1, SMALL["dim"]))))
    state["pos_emb.emb.weight"] = torch.from_numpy(np.vstack((gene2vec, extra)))
    for key in [k for k in state if k.endswith("projection_matrix")]:
        state[key] = torch.randn(features, SMALL["dim_head"])
    state["performer.calls_since_last_redraw"] = torch.tensor(0)
    state["to_out.weight"] = torch.randn(8, SMALL["dim"])
    state["to_out.bias"] = torch.zeros(8)
    torch.save({"model_state_dict": state}, folder / "checkpoint4_fixed.pth")
    return folder

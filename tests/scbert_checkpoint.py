"""A small random scBERT checkpoint in the published layout, for tests and benchmarks.

The published folder holds `panglao_pretrain.pth` (a training checkpoint:
`model_state_dict` of PerformerLM, with optimizer state and losses beside
it) and `gene2vec_16906.npy`; the 16,906-gene PanglaoDB panel comes with
scBERT's data (`panglao_10000.h5ad`), which is not in ../shared, so the
panel here is a list of real PC9 gene symbols (`gene_panel.txt`) and the
network is small; key names, dtypes and the FAVOR+ buffers are the real ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from scdrugmap.embed.models.scbert import ScBERTModel

SMALL = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16}


def write_scbert_checkpoint(folder: Path, panel: list[str], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gene_panel.txt").write_text("\n".join(panel) + "\n")
    rng = np.random.default_rng(seed)
    gene2vec = rng.normal(size=(len(panel), SMALL["dim"]))
    np.save(folder / "gene2vec_16906.npy", gene2vec)
    features = int(SMALL["dim_head"] * math.log(SMALL["dim_head"]))
    shapes = {
        "num_tokens": 7,
        "dim": SMALL["dim"],
        "positions": len(panel) + 1,
        "features": features,
        "depth": SMALL["depth"],
    }
    torch.manual_seed(seed)
    model = ScBERTModel(shapes, SMALL["heads"], SMALL["dim_head"])
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    state["pos_emb.emb.weight"] = torch.from_numpy(
        np.vstack((gene2vec, np.zeros((1, SMALL["dim"]))))
    )
    for key in [k for k in state if k.endswith("projection_matrix")]:
        state[key] = torch.randn(features, SMALL["dim_head"])
    state["performer.calls_since_last_redraw"] = torch.tensor(0)
    state["to_out.weight"] = torch.randn(7, SMALL["dim"])
    state["to_out.bias"] = torch.zeros(7)
    torch.save(
        {"epoch": 10, "model_state_dict": state, "optimizer_state_dict": {}, "losses": [0.5]},
        folder / "panglao_pretrain.pth",
    )
    return folder

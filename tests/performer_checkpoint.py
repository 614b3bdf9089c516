"""The state dict of a small random PerformerLM (scBERT, CellLM) in the published layout.

Both models publish a `model_state_dict` with gene2vec positions plus constant
rows, FAVOR+ projection buffers, a redraw counter and a `to_out` head; only
the token count, the constant rows and the model class differ.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SMALL = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16}
# The attention shape a loader is told (`--param heads=... dim_head=...`): the published
# checkpoints do not record it.
SHAPE = {"heads": SMALL["heads"], "dim_head": SMALL["dim_head"]}


def random_performer_state(
    model_class: type,
    num_tokens: int,
    gene2vec: np.ndarray,
    extra_rows: tuple[float, ...],
    seed: int,
) -> dict[str, torch.Tensor]:
    features = int(SMALL["dim_head"] * math.log(SMALL["dim_head"]))
    shapes = {
        "num_tokens": num_tokens,
        "dim": SMALL["dim"],
        "positions": len(gene2vec) + len(extra_rows),
        "features": features,
        "depth": SMALL["depth"],
    }
    torch.manual_seed(seed)
    model = model_class(shapes, SMALL["heads"], SMALL["dim_head"])
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    extra = np.repeat(np.asarray(extra_rows, dtype=np.float64)[:, None], SMALL["dim"], 1)
    state["pos_emb.emb.weight"] = torch.from_numpy(np.vstack((gene2vec, extra)))
    for key in [k for k in state if k.endswith("projection_matrix")]:
        state[key] = torch.randn(features, SMALL["dim_head"])
    state["performer.calls_since_last_redraw"] = torch.tensor(0)
    state["to_out.weight"] = torch.randn(num_tokens, SMALL["dim"])
    state["to_out.bias"] = torch.zeros(num_tokens)
    return state

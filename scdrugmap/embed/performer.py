"""The Performer (FAVOR+ linear attention) as scBERT and CellLM publish it, written once.

Both checkpoints come from the same `performer_pytorch` code, so parameter
names follow its nesting (`performer.net.layers.N.0.fn.to_q`,
`...N.1.fn.fn.w1`). Attention features use the random projection stored in
the checkpoint; nothing is redrawn. Keys are stabilised by their maximum
per cell, which equals the reference run one cell per call.

Padding: CellLM pads every cell to a fixed length and masks only the values,
so its padded keys still count in the attention normaliser. Identical
padding positions stay identical through every layer, so one position
weighted by their number (`weights`) stands for them all, at the cost of one
token instead of thousands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scdrugmap.embed.torch_runtime import load_weights
from scdrugmap.errors import InputError

KERNEL_EPS = 1e-4


class FastAttention(nn.Module):
    """Holds the checkpoint's fixed FAVOR+ random features (`projection_matrix`)."""

    def __init__(self, features: int, dim_head: int) -> None:
        super().__init__()
        self.register_buffer("projection_matrix", torch.zeros(features, dim_head))

    def features(
        self, data: torch.Tensor, is_query: bool, weights: torch.Tensor | None
    ) -> torch.Tensor:
        """Positive random features of the softmax kernel, stabilised by a maximum:
        per query row for queries, per cell (all heads, present positions) for keys."""
        normalizer = data.shape[-1] ** -0.25
        ratio = self.projection_matrix.shape[0] ** -0.5
        projected = (normalizer * data) @ self.projection_matrix.t().type_as(data)
        diagonal = (data**2).sum(-1, keepdim=True) / 2.0 * normalizer**2
        if is_query:
            largest = projected.amax(dim=-1, keepdim=True)
        else:
            present = projected
            if weights is not None:
                present = projected.masked_fill((weights == 0)[:, None, :, None], -torch.inf)
            largest = present.amax(dim=(1, 2, 3), keepdim=True)
        return ratio * (torch.exp(projected - diagonal - largest) + KERNEL_EPS)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: torch.Tensor | None
    ) -> torch.Tensor:
        q, k = self.features(q, True, None), self.features(k, False, weights)
        counted = k if weights is None else k * weights[:, None, :, None]
        normaliser = 1.0 / torch.einsum("...nd,...d->...n", q, counted.sum(dim=-2))
        context = torch.einsum("...nd,...ne->...de", k, v)
        return torch.einsum("...de,...nd,...n->...ne", context, q, normaliser)


class PerformerAttention(nn.Module):
    """Heads of FAVOR+ attention; `to_q`/`to_k`/`to_v` are called as modules (LoRA targets)."""

    def __init__(self, dim: int, heads: int, dim_head: int, features: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.fast_attention = FastAttention(features, dim_head)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(
        self,
        x: torch.Tensor,
        values_kept: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, -1).transpose(1, 2)

        values = split(self.to_v(x))
        if values_kept is not None:
            values = values.masked_fill(~values_kept[:, None, :, None], 0.0)
        out = self.fast_attention(split(self.to_q(x)), split(self.to_k(x)), values, weights)
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim * mult)
        self.w2 = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x)))


class Wrapped(nn.Module):
    """A module under `.fn`, as the reference's PreLayerNorm and Chunk wrappers name it."""

    def __init__(self, fn: nn.Module, norm_dim: int | None = None) -> None:
        super().__init__()
        if norm_dim is not None:
            self.norm = nn.LayerNorm(norm_dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.fn(self.norm(x) if hasattr(self, "norm") else x, **kwargs)


class Layers(nn.Module):
    """`performer.net.layers.N.{0,1}`: pre-norm attention and feed-forward, residual."""

    def __init__(self, blocks: list[nn.ModuleList]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, **attention_options) -> torch.Tensor:
        for attention, feed_forward in self.layers:
            x = x + attention(x, **attention_options)
            x = x + feed_forward(x)
        return x


class Performer(nn.Module):
    def __init__(self, net: Layers) -> None:
        super().__init__()
        self.net = net


def build_performer(dim: int, depth: int, heads: int, dim_head: int, features: int) -> Performer:
    blocks = [
        nn.ModuleList(
            [
                Wrapped(PerformerAttention(dim, heads, dim_head, features), dim),
                Wrapped(Wrapped(FeedForward(dim)), dim),
            ]
        )
        for _ in range(depth)
    ]
    return Performer(Layers(blocks))


class GenePositions(nn.Module):
    """gene2vec vectors per panel position (plus the model's extra rows), float64 as published."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(length, dim, dtype=torch.float64)


def read_performer_state(path: Path, extra_rows: tuple[float, ...], gene2vec: Path) -> dict:
    """A published PerformerLM checkpoint's state dict, safely loaded.

    When it lacks the position table, the table is rebuilt as the reference
    builds it: gene2vec vectors, then one constant row per `extra_rows` value.
    """
    saved = load_weights(path)
    state = saved.get("model_state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds no model_state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "pos_emb.emb.weight" not in state:
        vectors = np.load(gene2vec)
        extra = np.repeat(np.asarray(extra_rows, dtype=np.float64)[:, None], vectors.shape[1], 1)
        state["pos_emb.emb.weight"] = torch.from_numpy(np.vstack((vectors, extra)))
    return state


def performer_shapes(state: dict[str, torch.Tensor], path: Path) -> dict:
    """Sizes read from the weights themselves: tokens, width, positions, features, depth."""
    try:
        depth = {int(k.split(".")[3]) for k in state if k.startswith("performer.net.layers.")}
        projection = state["performer.net.layers.0.0.fn.fast_attention.projection_matrix"]
        return {
            "num_tokens": state["token_emb.weight"].shape[0],
            "dim": state["token_emb.weight"].shape[1],
            "positions": state["pos_emb.emb.weight"].shape[0],
            "features": projection.shape[0],
            "depth": len(depth),
        }
    except KeyError as error:
        raise InputError(f"{path}: not a PerformerLM checkpoint (no {error})") from error


def load_performer_weights(
    model: nn.Module, state: dict, path: Path, heads: int, dim_head: int
) -> nn.Module:
    """The encoder's weights into `model`; the token head (`to_out`) and redraw counter are
    training-time parts an embedding never uses."""
    kept = {k: v for k, v in state.items() if not k.startswith("to_out.")}
    kept.pop("performer.calls_since_last_redraw", None)
    try:
        missing, unexpected = model.load_state_dict(kept, strict=False)
    except RuntimeError as error:
        raise InputError(
            f"{path}: shapes do not fit heads={heads}, dim_head={dim_head} "
            f"({str(error).splitlines()[0]})"
        ) from error
    if missing or unexpected:
        raise InputError(
            f"{path}: not this model's PerformerLM (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return model.eval()

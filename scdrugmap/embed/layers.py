"""Transformer layers as PyTorch's `nn.TransformerEncoderLayer` holds them, run through SDPA.

scGPT and scFoundation both encode with post-norm ReLU layers whose
parameters carry PyTorch's names (`self_attn.in_proj_weight`,
`self_attn.out_proj`, `linear1`, `linear2`, `norm1`, `norm2`). This one layer
loads either checkpoint unchanged, runs `scaled_dot_product_attention` (flash
kernels on CUDA) and calls `out_proj` as a module, so LoRA adapters placed on
it sit on the path the output takes (PyTorch's fused fast path would bypass
them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head attention through `scaled_dot_product_attention`.

    Parameters keep PyTorch's `in_proj_*`/`out_proj` names (the fused `Wqkv`
    of flash-attention checkpoints is the same matrix); `out_proj` is called
    as a module, so adapters placed on it are on the path the output takes.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        qkv = F.linear(hidden, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, width))


class EncoderLayer(nn.Module):
    """Post-norm layer with a ReLU feed-forward: `nn.TransformerEncoderLayer` defaults."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = SelfAttention(width, heads)
        self.linear1 = nn.Linear(width, hidden)
        self.linear2 = nn.Linear(hidden, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        hidden = self.norm1(hidden + self.self_attn(hidden, keep))
        return self.norm2(hidden + self.linear2(F.relu(self.linear1(hidden))))

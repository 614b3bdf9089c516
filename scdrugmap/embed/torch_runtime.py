"""Device, precision and batching shared by the torch-based embedders.

A run that asked for CUDA must never fall back to the CPU silently, and an
embedding must not depend on which cells share a batch: cells are batched by
token length (padding is wasted work) and each cell's output depends only on
its own tokens, so batching is free to change without changing the result.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scdrugmap.errors import InputError

PRECISIONS = ("float32", "bfloat16", "float16")


def load_weights(path: Path) -> Any:
    """A published torch file read with `weights_only`: tensors and plain containers only,
    so a tampered file cannot run code; anything else is refused with the reason."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise InputError(
            f"{path}: not a plain weights file ({str(error).splitlines()[0]}); use it as published"
        ) from error


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when present, else CPU; an explicit 'cuda' without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use cpu")
    return resolved


def autocast(device: torch.device, precision: str):
    """Mixed precision on CUDA when asked for; float32 everywhere else."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "float32" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, precision))


def length_batches(lengths: np.ndarray, max_tokens: int, max_cells: int) -> Iterator[np.ndarray]:
    """Cell positions grouped by similar length, each batch within a token budget.

    Deterministic (stable sort, longest first) so that an out-of-memory error
    shows up on the first batch, not at the end of a long run.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    start = 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))
        size = max(1, min(max_cells, max_tokens // longest))
        yield order[start : start + size]
        start += size


def embed_by_length(
    lengths: np.ndarray,
    dim: int,
    batching: dict,
    embed_group: Callable[[np.ndarray], np.ndarray],
    min_length: int = 1,
) -> np.ndarray:
    """(n_cells, dim) float32 in input order, each length batch embedded by `embed_group`.

    Cells with fewer than `min_length` tokens have nothing to embed: their
    rows stay zero rather than failing the chunk.
    """
    out = np.zeros((len(lengths), dim), dtype=np.float32)
    cells = np.flatnonzero(lengths >= min_length)
    for group in length_batches(lengths[cells], **batching):
        chosen = cells[group]
        out[chosen] = embed_group(chosen)
    return out


def pad_ragged(
    flat: np.ndarray, offsets: np.ndarray, cells: np.ndarray, fill: float | int
) -> tuple[np.ndarray, np.ndarray]:
    """The chosen cells' ragged rows as one padded matrix, and the mask of real tokens."""
    lengths = offsets[cells + 1] - offsets[cells]
    position = np.arange(int(lengths.max()))
    keep = position[None, :] < lengths[:, None]
    index = np.minimum(offsets[cells][:, None] + position[None, :], len(flat) - 1)
    return np.where(keep, flat[index], fill), keep

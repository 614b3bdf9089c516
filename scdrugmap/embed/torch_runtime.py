"""Device, precision and batching shared by the torch-based embedders.

A run that asked for CUDA must never fall back to the CPU silently, and an
embedding must not depend on which cells share a batch: cells are batched by
token length (padding is wasted work) and each cell's output depends only on
its own tokens, so batching is free to change without changing the result.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
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


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on the device: through pinned memory and a non-blocking copy on CUDA,
    so the copy overlaps the work already queued there; as it is on the CPU."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _lower_budget(batching: dict, cells: int, longest: int) -> None:
    """Halve the batch budget after the device ran out of memory on cells x longest tokens.

    The budget is the embedder's own dict, so every later batch and chunk of the run
    keeps the lower figure instead of failing again at the old one.
    """
    batching["max_tokens"] = max(longest, (cells * longest) // 2)
    batching["max_cells"] = max(1, cells // 2)
    warnings.warn(
        f"out of device memory at {cells} cells x {longest} tokens; batch budget lowered to "
        f"{batching['max_tokens']} tokens, {batching['max_cells']} cells",
        RuntimeWarning,
        stacklevel=3,
    )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def embed_by_length(
    lengths: np.ndarray,
    dim: int,
    batching: dict,
    embed_group: Callable[[np.ndarray], np.ndarray],
    min_length: int = 1,
) -> np.ndarray:
    """(n_cells, dim) float32 in input order, embedded by `embed_group` in batches of similar
    length (longest first, so an out-of-memory error shows on the first batch) within a
    token budget (`max_tokens`) and a cell cap (`max_cells`).

    When the device runs out of memory the budget is halved and the batch retried, so a
    long run slows down instead of dying; a cell that cannot fit alone is an error.
    Cells with fewer than `min_length` tokens have nothing to embed: their rows stay zero.
    """
    out = np.zeros((len(lengths), dim), dtype=np.float32)
    cells = np.flatnonzero(lengths >= min_length)
    order = cells[np.argsort(-np.asarray(lengths)[cells], kind="stable")]
    start = 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))
        size = max(1, min(batching["max_cells"], batching["max_tokens"] // longest))
        chosen = order[start : start + size]
        try:
            out[chosen] = embed_group(chosen)
        except torch.cuda.OutOfMemoryError:
            if len(chosen) == 1:
                raise InputError(
                    f"one cell of {longest} tokens does not fit in device memory; lower the "
                    "model's input length (--param) or use a device with more memory"
                ) from None
            _lower_budget(batching, len(chosen), longest)
            continue
        start += len(chosen)
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

"""The MLP head's optimiser steps in torch, on the CPU or a GPU.

Everything but the steps stays in `mlp.py`, shared with the numpy trainer: the
seeded initial weights, the validation slice, the batch order, the epoch count,
early stopping and prediction (numpy, on the kept weights). The two trainers
therefore start from the same weights and see the same batches, and differ only
in float rounding (torch's fused AdamW and its own kernels), so a model trained
either way is saved and loaded as the same `state_dict()`.

Why torch: a step is three small matrix products each way plus AdamW over every
parameter; numpy spends most of it on temporaries of the update (each moment and
the weights rewritten several times a step) and in Python between operations,
while torch updates in place in one fused kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.nn import functional

# (features, labels, sample weights) of one side of the fit, as `mlp.Batches` holds them.
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for the fit, as numpy is on one BLAS thread (a batch
    is too small for threads to pay, and they spin on a busy machine); restored after.

    torch keeps the count per thread (OpenMP's), seeded in a new thread from the last
    count set anywhere. Folds fitting in parallel run in fresh threads that all start
    from the same count (1 where the run's policy set it: nothing changes then), so
    their restores all write the same value back."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchTrainer:
    """AdamW steps with torch's optimiser on the weights `mlp.py` initialised."""

    def __init__(
        self,
        params: dict[str, np.ndarray],
        train: Rows,
        val: Rows,
        *,
        learning_rate: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        device: str = "auto",
    ) -> None:
        self.device = _device(device)
        self.names = list(params)
        self.tensors = {
            k: torch.tensor(v, device=self.device, requires_grad=True) for k, v in params.items()
        }
        self.train = self._on_device(train)
        self.val = self._on_device(val)
        self.optimizer = torch.optim.AdamW(
            list(self.tensors.values()),
            lr=learning_rate,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            fused=True,
        )

    def _on_device(self, rows: Rows) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(array).to(self.device) for array in rows)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        t = self.tensors
        hidden = torch.relu(functional.linear(x, t["fc1.weight"], t["fc1.bias"]))
        hidden = torch.relu(functional.linear(hidden, t["fc2.weight"], t["fc2.bias"]))
        logits = functional.linear(hidden, t["fc3.weight"], t["fc3.bias"])
        return (functional.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()

    def step(self, batch: np.ndarray) -> float:
        """One update on the training rows `batch`; the batch's loss before it."""
        rows = torch.from_numpy(batch).to(self.device)
        x, y, w = self.train
        loss = self._loss(x[rows], y[rows], w[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def validation_loss(self) -> float:
        with torch.no_grad():
            return float(self._loss(*self.val))

    def weights(self) -> dict[str, np.ndarray]:
        return {k: t.detach().cpu().numpy().copy() for k, t in self.tensors.items()}

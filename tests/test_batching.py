"""Length-bucketed batching: a token budget per batch, longest first, and a budget that
halves after an out-of-memory error instead of ending the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdrugmap.embed.torch_runtime import embed_by_length
from scdrugmap.errors import InputError


def _embed_rows(batches: list[np.ndarray], capacity: int | None = None, lengths=None):
    """A cell's row is (its index, its length); fails like a full device above `capacity`
    padded tokens per batch."""

    def embed_group(cells: np.ndarray) -> np.ndarray:
        if capacity is not None and len(cells) * lengths[cells].max() > capacity:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        batches.append(cells)
        return np.stack([cells, lengths[cells]], axis=1).astype(np.float32)

    return embed_group


def test_batches_are_longest_first_within_the_token_budget() -> None:
    lengths = np.array([5, 50, 0, 20, 50, 10, 1])
    batches: list[np.ndarray] = []
    out = embed_by_length(
        lengths, 2, {"max_tokens": 100, "max_cells": 8}, _embed_rows(batches, None, lengths)
    )
    assert [b.tolist() for b in batches] == [[1, 4], [3, 5, 0, 6]]
    assert all(len(b) * lengths[b].max() <= 100 for b in batches)
    np.testing.assert_array_equal(out[:, 0], [0, 1, 0, 3, 4, 5, 6])
    assert (out[2] == 0).all()  # a cell with no tokens keeps a zero row


def test_out_of_memory_lowers_the_budget_and_gives_the_same_rows() -> None:
    lengths = np.random.default_rng(0).integers(1, 200, size=300)
    expected = embed_by_length(
        lengths, 2, {"max_tokens": 4096, "max_cells": 64}, _embed_rows([], None, lengths)
    )
    budget = {"max_tokens": 4096, "max_cells": 64}
    batches: list[np.ndarray] = []
    with pytest.warns(RuntimeWarning, match="batch budget lowered"):
        out = embed_by_length(lengths, 2, budget, _embed_rows(batches, 1000, lengths))
    np.testing.assert_array_equal(out, expected)
    assert budget["max_tokens"] < 4096  # kept low for the rest of the run
    assert all(len(b) * lengths[b].max() <= 1000 for b in batches)


def test_a_cell_that_cannot_fit_alone_is_an_error() -> None:
    lengths = np.array([3000, 10])
    with (
        pytest.warns(RuntimeWarning, match="lowered"),
        pytest.raises(InputError, match="one cell of 3000 tokens"),
    ):
        embed_by_length(
            lengths, 2, {"max_tokens": 8000, "max_cells": 8}, _embed_rows([], 2000, lengths)
        )


def test_cpu_caps_the_default_token_budget_but_not_one_the_user_set() -> None:
    from scdrugmap.embed.torch_embedder import CPU_MAX_TOKENS, TorchEmbedder, split_options

    defaults = {"max_tokens": 65_536, "max_cells": 256}

    def on_cpu(options: dict) -> dict:
        _, budget = split_options("demo", dict(options), {}, defaults)
        return TorchEmbedder(torch.nn.Linear(2, 2), None, "cpu", {}, budget, "sha", 2).batching

    assert on_cpu({})["max_tokens"] == CPU_MAX_TOKENS
    assert on_cpu({"max_tokens": "20000"})["max_tokens"] == 20_000
    assert on_cpu({"max_cells": 3}) == {"max_tokens": CPU_MAX_TOKENS, "max_cells": 3}

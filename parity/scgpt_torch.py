"""scGPT parity, best_model.pt in PyTorch's layout (`in_proj_weight` / `in_proj_bias`):
scdrugmap's embedding against bowang-lab/scGPT's `embed_data` with
`use_fast_transformer=False` (PyTorch's TransformerEncoderLayer). The reference's random
draws are handed ours (see parity/_scgpt.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parity import _scgpt

REFERENCE = _scgpt.REFERENCE
DEFAULT_CELLS = _scgpt.DEFAULT_CELLS


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    return _scgpt.build_checkpoint(folder, flash_layout=False)


def main(argv: Sequence[str] | None = None) -> float:
    return _scgpt.main(__doc__, flash_layout=False, argv=argv)


if __name__ == "__main__":
    main()

"""scGPT parity, best_model.pt in the flash-attention layout (fused `Wqkv`): scdrugmap's
embedding against bowang-lab/scGPT's `embed_data` with `use_fast_transformer=True`, which on
a machine without flash-attn runs PyTorch's encoder layers after its `load_pretrained`
renames `Wqkv` to `in_proj_*`. The reference's random draws are handed ours (see
parity/_scgpt.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parity import _scgpt

REFERENCE = _scgpt.REFERENCE
DEFAULT_CELLS = _scgpt.DEFAULT_CELLS


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    return _scgpt.build_checkpoint(folder, flash_layout=True)


def main(argv: Sequence[str] | None = None) -> float:
    return _scgpt.main(__doc__, flash_layout=True, argv=argv)


if __name__ == "__main__":
    main()

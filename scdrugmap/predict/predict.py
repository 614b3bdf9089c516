"""Per-cell predictions for new cells: ingest, embed as the predictor's embedding, classify.

The new cells are ingested as a data set of their own (with the same
validation as `ingest`) and embedded under the predictor's embedding key, by
the very embedder the predictor was fitted on: the stored fit for a baseline,
the checkpoint for a foundation model, refused before any work when its
settings hash differs from the predictor's. If embedding fails (for example,
the new cells share too few genes with the embedding), the new data set is
removed again, so a bad file leaves the store as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.embed.provenance import file_sha256, settings_hash, utc_now
from scdrugmap.embed.runner import LowCoverageError
from scdrugmap.errors import InputError, StoreError
from scdrugmap.predict.train import load_predictor

OUTPUT_SUFFIXES = (".csv", ".h5ad")
# New cells must share half their expressed genes with what the embedding reads, for
# baselines too (which otherwise accept any genes): a call from a handful of genes
# would look like any other call.
MIN_COVERAGE = 0.5


@dataclass
class Predictions:
    predictor: str
    embedding: str
    dataset_id: str
    cells: pd.DataFrame
    samples: pd.DataFrame
    features: np.ndarray  # the cells' embedding rows, in `cells` order (for maps and h5ad)


def _as_recorded(recipe: dict, checkpoint, options: dict) -> tuple[object, dict]:
    """The checkpoint and --param values the embedding was made with, when the caller
    names neither (a checkpoint directory since moved falls back to the configured one);
    the settings-hash check below still decides whether the model is the same."""
    if checkpoint is not None or options or not recipe:
        return checkpoint, options
    recorded = Path(recipe["checkpoint"])
    return (recorded if recorded.is_dir() else None), dict(recipe["options"])


def _fold_in_adapter(store, embedder, embedding: dict, recipe: dict) -> None:
    """A fine-tuned embedding's LoRA adapter, folded into the base model again, after its
    file is checked against the sha256 the embedding recorded."""
    from scdrugmap.finetune.lora import merge_adapter

    adapter = embedding["settings"]["adapter"]
    folder = (store.path / recipe["adapter"]).resolve()
    weights = folder / "adapter_model.safetensors"
    inside = folder.is_relative_to(store.path.resolve())
    if not (inside and weights.is_file() and file_sha256(weights) == adapter["adapter_sha256"]):
        raise StoreError(
            f"the LoRA adapter of embedding {embedding['key']!r} ({recipe['adapter']}) is gone "
            "or changed; run `scdrugmap finetune ... --embed-as` again and retrain the predictor"
        )
    embedder.model = merge_adapter(embedder.model, folder)
    embedder.settings = {**embedder.settings, "adapter": adapter}
    embedder.load_recipe = recipe


def _embedder_as_trained(store, record: dict, checkpoint, device: str, options: dict):
    from scdrugmap.embed.build import build_embedder

    embedding = record["embedding"]
    recipe = embedding.get("load_recipe") or {}
    checkpoint, options = _as_recorded(recipe, checkpoint, options)
    embedder = build_embedder(
        store, embedding["model"], embedding["key"], [], checkpoint, None, device, dict(options)
    )
    if recipe.get("adapter"):
        _fold_in_adapter(store, embedder, embedding, recipe)
    if settings_hash(embedder.name, embedder.provenance()) != embedding["settings_hash"]:
        raise InputError(
            f"{embedding['model']} as loaded here differs from the one predictor "
            f"{record['name']!r} was fitted on (weights or settings); use the same checkpoint "
            "and --param values"
        )
    return embedder


def per_sample(cells: pd.DataFrame) -> pd.DataFrame:
    """Each sample's cells, mean probability of sensitivity, share called sensitive, call."""
    grouped = cells.groupby("sample", sort=True)
    summary = pd.DataFrame(
        {
            "n_cells": grouped.size(),
            "mean_prob_sensitive": grouped["prob_sensitive"].mean(),
            "fraction_sensitive": grouped["call"].apply(lambda c: float((c == "sensitive").mean())),
        }
    ).reset_index()
    summary["call"] = np.where(summary["mean_prob_sensitive"] >= 0.5, "sensitive", "resistant")
    return summary


def predict_files(
    store,
    predictor: str,
    files: list[str | os.PathLike],
    *,
    dataset_id: str | None = None,
    samples: list[str] | None = None,
    sample_column: str | None = None,
    checkpoint=None,
    device: str = "auto",
    options: dict | None = None,
    show_progress: bool = False,
) -> Predictions:
    from scdrugmap.data.prepare import IngestOptions
    from scdrugmap.store.store import check_key

    record, model = load_predictor(store, predictor)
    embedder = _embedder_as_trained(store, record, checkpoint, device, options or {})
    dataset_id = check_key(dataset_id or f"{predictor}-{utc_now():%Y%m%d-%H%M%S}", "data set id")
    store.ingest(
        files, IngestOptions(dataset_id, samples=list(samples or []), sample_column=sample_column)
    )
    key = record["embedding"]["key"]
    try:
        store.embed_with(
            embedder,
            key,
            [dataset_id],
            min_coverage=MIN_COVERAGE,
            show_progress=show_progress,
        )
    except LowCoverageError as error:
        store.drop_dataset(dataset_id)
        raise InputError(
            f"{', '.join(map(str, files))}: {error.finding}; a call from so few known genes "
            "would not be trustworthy, so none is made"
        ) from error
    except BaseException:
        store.drop_dataset(dataset_id)
        raise
    cells = store.cells(
        f"dataset_id = '{dataset_id}'",
        labelled=False,
        columns=("dataset_id", "cell_index", "barcode", "sample"),
    )
    features = store.load_embedding(key, cells)
    prob = model.predict_proba(features)[:, 1]
    cells = cells.assign(
        prob_sensitive=prob.astype(np.float32),
        call=np.where(prob >= 0.5, "sensitive", "resistant"),
    )
    return Predictions(predictor, key, dataset_id, cells, per_sample(cells), features)


def write_predictions(store, result: Predictions, out: str | os.PathLike) -> list[Path]:
    """Per-cell calls as CSV (with `<name>.samples.csv` beside it) or as an h5ad whose obs
    hold the calls, obsm the embedding and uns the per-sample summary."""
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"--out {out}: write .csv or .h5ad")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        samples = out.with_name(f"{out.stem}.samples.csv")
        result.cells.to_csv(out, index=False)
        result.samples.to_csv(samples, index=False)
        return [out, samples]
    import anndata as ad

    key = result.embedding
    reader = store.reader(result.dataset_id)
    obs = result.cells.set_index("barcode")
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(
        X=reader.read_rows(0, reader.n_cells),
        obs=obs,
        var=pd.DataFrame(index=reader.gene_ids),
        obsm={f"X_{key}": result.features},
        uns={"per_sample": {c: result.samples[c].tolist() for c in result.samples.columns}},
    )
    adata.write_h5ad(out)
    return [out]

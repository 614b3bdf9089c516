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
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.classify.metrics import wilson_interval
from scdrugmap.embed.runner import LowCoverageError
from scdrugmap.errors import InputError, StoreError
from scdrugmap.predict.domain import cell_domain, sample_domain
from scdrugmap.predict.train import load_calibration, load_domain_index, load_predictor
from scdrugmap.provenance import file_sha256, settings_hash, utc_now

OUTPUT_SUFFIXES = (".csv", ".h5ad")
# A foundation model must know half of each new cell's expressed genes: a call from a
# handful of genes would look like any other call.
MIN_COVERAGE = 0.5
# A fitted baseline (pca, hvg) reads a fixed panel of a few thousand genes, never half of
# a cell's expressed genes; what matters is how much of that panel the file has at all
# (a missing gene is read as zero).
MIN_PANEL_COVERAGE = 0.5
NO_CALL = "no call"
# A sample whose share of sensitive cells could be either side of one half.
UNCERTAIN = "uncertain"


@dataclass
class Predictions:
    predictor: str
    embedding: str
    dataset_id: str
    cells: pd.DataFrame
    samples: pd.DataFrame
    features: np.ndarray  # the cells' embedding rows, in `cells` order (for maps and h5ad)
    gene_coverage: float  # see `coverage_basis`
    coverage_basis: str  # what `gene_coverage` is the share of
    # The predictor's domain quantile (predict/domain.py); None when it keeps no index.
    domain_quantile: float | None = None


@dataclass(frozen=True)
class _Coverage:
    value: float
    basis: str


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


def embedder_as_trained(store, record: dict, checkpoint, device: str, options: dict):
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
    """Each sample's cells, how many got a call, the mean (calibrated) probability of
    sensitivity, the share called sensitive among those with its 95 % Wilson interval
    (`fraction_low`, `fraction_high`), and the sample's call: sensitive or resistant when
    that interval lies wholly above or below 0.5, uncertain when it holds 0.5 (about half
    the cells each way, or too few cells to tell), no call without called cells; with
    the cells' domain, the share of called cells in it (`fraction_in_domain`) and
    `domain_note`, "outside the predictor's domain" when under half are."""
    called = cells["call"] != NO_CALL
    grouped = cells.assign(called=called, sensitive=cells["call"] == "sensitive").groupby(
        "sample", sort=True
    )
    n_called = grouped["called"].sum()
    summary = pd.DataFrame(
        {
            "n_cells": grouped.size(),
            "n_called": n_called,
            "mean_prob_sensitive": grouped["prob_sensitive"].mean(),
            "fraction_sensitive": grouped["sensitive"].sum() / n_called.where(n_called > 0),
        }
    ).reset_index()
    low, high = wilson_interval(grouped["sensitive"].sum().to_numpy(), n_called.to_numpy())
    summary["fraction_low"], summary["fraction_high"] = low, high
    summary["call"] = np.select(
        [n_called.to_numpy() == 0, low > 0.5, high < 0.5],
        [NO_CALL, "sensitive", "resistant"],
        UNCERTAIN,
    )
    if "in_domain" in cells:
        summary = summary.merge(sample_domain(cells, called), on="sample", how="left")
    return summary


def baseline_panel(embedder) -> list[str] | None:
    from scdrugmap.embed.baselines.base import FittedBaseline

    return embedder.genes if isinstance(embedder, FittedBaseline) else None


def _panel_coverage(store, dataset_id: str, embedder, panel: list[str], files) -> _Coverage:
    """The share of the baseline's panel that the new data set has; refused below
    MIN_PANEL_COVERAGE (the data set is removed again)."""
    present = set(store.reader(dataset_id).gene_ids)
    share = sum(g in present for g in panel) / max(len(panel), 1)
    if share < MIN_PANEL_COVERAGE:
        id_type = store.dataset(dataset_id)["gene_id_type"]
        store.drop_dataset(dataset_id)
        raise InputError(
            f"{', '.join(map(str, files))}: only {share:.0%} of the {len(panel)} genes of the "
            f"{embedder.name} panel are in the file (it uses {id_type} identifiers); a "
            f"projection missing so many genes would not be trustworthy, so no call is made"
        )
    return _Coverage(share, f"share of the {len(panel)} genes of the {embedder.name} panel")


def _mean_cell_coverage(store, key: str, dataset_id: str, embedder) -> _Coverage:
    row = store.query(
        "SELECT mean_coverage FROM embeddings WHERE key = ? AND dataset_id = ?", [key, dataset_id]
    )
    return _Coverage(
        float(row["mean_coverage"].iloc[0]),
        f"mean share of a cell's expressed genes in the {embedder.name} vocabulary",
    )


def cell_calls(
    store, key: str, cells: pd.DataFrame, raw: np.ndarray, calibrated: np.ndarray
) -> pd.DataFrame:
    """Probabilities (`prob_sensitive` calibrated, `prob_sensitive_raw` the classifier's)
    and calls from the calibrated one, with none for cells the embedding saw nothing of
    (their rows are one shared vector): NaN, NO_CALL and the reason from `failures`."""
    failed = store.query(
        "SELECT cell_index, reason FROM failures WHERE key = ? AND dataset_id = ?",
        [key, str(cells["dataset_id"].iloc[0]) if len(cells) else ""],
    )
    reason = (
        cells["cell_index"].map(failed.set_index("cell_index")["reason"]).astype(object)
        if len(failed)
        else pd.Series(None, index=cells.index, dtype=object)
    )
    no_call = reason.notna().to_numpy()
    raw = np.where(no_call, np.nan, raw).astype(np.float32)
    prob = np.where(no_call, np.nan, calibrated).astype(np.float32)
    call = np.where(no_call, NO_CALL, np.where(prob >= 0.5, "sensitive", "resistant"))
    return cells.assign(
        prob_sensitive=prob, prob_sensitive_raw=raw, call=call, no_call_reason=reason.fillna("")
    )


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
    from scdrugmap.data.prepare import IngestOptions, prepare_dataset
    from scdrugmap.embed.into_store import embed_into_store
    from scdrugmap.store.storage import check_key

    record, model = load_predictor(store, predictor)
    calibrator = load_calibration(store, predictor)
    embedder = embedder_as_trained(store, record, checkpoint, device, options or {})
    # A random tail: two uploads in the same second must not collide.
    default_id = f"{predictor}-{utc_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    dataset_id = check_key(dataset_id or default_id, "data set id")
    # A baseline fitted on normalised values (a SCAD table) reads uploads of that kind.
    values = getattr(embedder, "value_type", None) or "counts"
    reading = IngestOptions(
        dataset_id, samples=list(samples or []), sample_column=sample_column, values=values
    )
    store.add_prepared(prepare_dataset([Path(f) for f in files], reading))
    key = record["embedding"]["key"]
    panel = baseline_panel(embedder)
    coverage = (
        _panel_coverage(store, dataset_id, embedder, panel, files) if panel is not None else None
    )
    try:
        embed_into_store(
            store,
            embedder,
            key,
            [dataset_id],
            min_coverage=0.0 if panel is not None else MIN_COVERAGE,
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
    raw = model.predict_proba(features)[:, 1]
    calibrated = raw if calibrator is None else calibrator(raw)
    cells = cell_calls(store, key, cells, raw, calibrated)
    domain = load_domain_index(store, predictor)
    cells = cells.assign(**cell_domain(domain, features, (cells["call"] != NO_CALL).to_numpy()))
    coverage = coverage or _mean_cell_coverage(store, key, dataset_id, embedder)
    return Predictions(
        predictor,
        key,
        dataset_id,
        cells,
        per_sample(cells),
        features,
        coverage.value,
        coverage.basis,
        domain.quantile if domain is not None else None,
    )


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
    obs = result.cells.copy()
    # Unnamed, so obs.reset_index() gives an `index` column beside `barcode`.
    obs.index = pd.Index(obs["barcode"].astype(str).to_numpy(), name=None)
    adata = ad.AnnData(
        X=reader.read_rows(0, reader.n_cells),
        obs=obs,
        var=pd.DataFrame(index=reader.gene_ids),
        obsm={f"X_{key}": result.features},
        uns={
            "per_sample": {c: result.samples[c].tolist() for c in result.samples.columns},
            "predictor": result.predictor,
            "gene_coverage": result.gene_coverage,
            "coverage_basis": result.coverage_basis,
            # h5ad holds no None: left out for a predictor without a domain index.
            **({"domain_quantile": result.domain_quantile} if result.domain_quantile else {}),
        },
    )
    adata.write_h5ad(out)
    return [out]

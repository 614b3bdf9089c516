"""Options and argument parsing that several commands share, so each is written once."""

from __future__ import annotations

import json
from pathlib import Path

import click


def store_from(ctx: click.Context):
    from scdrugmap.workflows.api import Store

    return Store(ctx.obj["store"])


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def catalog_path(ctx: click.Context) -> Path:
    from scdrugmap.store.location import CATALOG_NAME, default_store_path

    return (ctx.obj["store"] or default_store_path()) / CATALOG_NAME


def catalog_rows(ctx: click.Context, query: str, limit: int | None = None):
    """Run a read-only query on the store's catalog by the fast path (no pandas)."""
    from scdrugmap.errors import StoreError
    from scdrugmap.store.sql import query_rows

    catalog = catalog_path(ctx)
    path = catalog.parent
    if not catalog.exists():
        raise StoreError(
            f"{path}: no scdrugmap store here; run `scdrugmap --store {path} ingest ...` "
            "first, or point --store / $SCDRUGMAP_STORE at one"
        )
    return query_rows(catalog, query, limit)


CHECKPOINT_OPTION = click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint directory of a foundation model, in its published layout "
    "(default: the one configured, see `scdrugmap models`).",
)
DEVICE_OPTION = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N, or auto (CUDA when present). Asking for CUDA never falls back.",
)
PARAM_OPTION = click.option(
    "--param",
    "params",
    multiple=True,
    help="Model setting KEY=VALUE, e.g. n_components=30 (pca), precision=bfloat16.",
)


def parse_params(params: tuple[str, ...]) -> dict:
    from scdrugmap.errors import InputError

    parsed = {}
    for item in params:
        if "=" not in item:
            raise InputError(f"--param {item!r}: give KEY=VALUE, e.g. --param n_components=30")
        key, raw = item.split("=", 1)
        try:
            parsed[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.strip()] = raw
    return parsed


EVAL_OPTIONS = [
    click.option(
        "--where",
        help="SQL condition on cell_meta selecting the cells, e.g. \"drug = 'erlotinib'\" "
        "(default: the data sets that hold the embedding; for finetune, those of raw counts).",
    ),
    click.option(
        "--folds",
        "n_folds",
        type=int,
        default=5,
        show_default=True,
        help="Folds of the pooled split.",
    ),
    click.option(
        "--shots",
        type=int,
        default=5,
        show_default=True,
        help="Labelled target cells per class in the few-shot split.",
    ),
    click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of splits and models."
    ),
    click.option("--json", "as_json", is_flag=True, help="Print JSON."),
]


def eval_options(command):
    for option in reversed(EVAL_OPTIONS):
        command = option(command)
    return command

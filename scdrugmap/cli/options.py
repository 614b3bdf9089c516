"""Options and argument parsing that several commands share, so each is written once,
and the store the `--store` option names."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from scdrugmap.workflows.api import Store

F = TypeVar("F", bound=Callable)


def store_path(ctx: click.Context) -> Path | None:
    """The --store given, or None for the default ($SCDRUGMAP_STORE or ./scdrugmap-store)."""
    return ctx.obj["store"]


def store_from(ctx: click.Context) -> Store:
    """The store with every operation; imported here, not at the top, because the workflows
    import the heavy libraries and `--help` must not wait for them."""
    from scdrugmap.workflows.api import Store

    return Store(store_path(ctx))


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def json_option(help_text: str = "Print JSON records.") -> Callable[[F], F]:
    """`--json`: every command that prints offers it, with its own wording of what it prints."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


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
    """--param KEY=VALUE pairs; a VALUE that reads as JSON (30, true, "a") is taken as such."""
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
    json_option("Print JSON."),
]


CONTROL_OPTION = click.option(
    "--control",
    type=click.Choice(["shuffled"]),
    default=None,
    help="shuffled: the same folds with labels permuted within each data set, kept beside "
    "the real run as its chance level (benchmark runs both).",
)


def eval_options(command: F) -> F:
    """The options evaluate, benchmark and finetune share (selection, folds, shots, seed)."""
    for option in reversed(EVAL_OPTIONS):
        command = option(command)
    return command

"""Embedding commands: embed, embeddings, models."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import (
    CHECKPOINT_OPTION,
    DEVICE_OPTION,
    PARAM_OPTION,
    json_option,
    parse_params,
    store_from,
)
from scdrugmap.cli.output import print_frame, print_rows


@main.command()
@json_option()
def models(as_json: bool) -> None:
    """List the embedders: size, gene identifiers, input length, checkpoint files, readiness.

    A foundation model is ready when its checkpoint directory is configured
    ($SCDRUGMAP_CHECKPOINT_<MODEL>, or a <model> folder under
    $SCDRUGMAP_CHECKPOINTS) and holds the published files; `embed` then needs
    no --checkpoint.
    """
    from scdrugmap.workflows.catalog import model_rows

    # Scripts get each model's description and source too; the table stays narrow.
    columns, rows = model_rows(with_descriptions=as_json)
    print_rows(columns, rows, as_json, "models")


@main.command()
@click.option("--model", required=True, help="Embedder name (see `scdrugmap models`).")
@click.option(
    "--datasets",
    "dataset_ids",
    default="all",
    show_default=True,
    help="Comma-separated data set ids, or 'all'.",
)
@click.option("--key", help="Embedding key in the store (default: the model's name).")
@CHECKPOINT_OPTION
@click.option(
    "--fit-on",
    help="Baselines: data sets to fit on when the key is new "
    "(default: the data sets being embedded).",
)
@click.option(
    "--chunk-size",
    type=int,
    default=10_000,
    show_default=True,
    help="Cells per chunk: the unit of streaming, writing and resuming.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Stored precision.",
)
@DEVICE_OPTION
@click.option(
    "--min-coverage",
    type=float,
    default=None,
    help="Refuse data sets whose cells have fewer of their expressed genes in the model's "
    "vocabulary (default 0.5 for foundation models; 0 embeds anyway).",
)
@PARAM_OPTION
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: spread chunks over Ray actors, one per GPU (or CPU worker); needs "
    "`pip install scdrugmap[ray]` and a store path every node reaches.",
)
@click.option(
    "--address", help="Ray cluster to join (e.g. auto, or ray://head:10001); default: a local one."
)
@click.option("--workers", type=int, help="Ray actors (default: one per GPU, else per CPU).")
@click.option("--replace", is_flag=True, help="Delete this key (and its fit) first.")
@json_option("Print the summary as JSON.")
@click.pass_context
def embed(
    ctx: click.Context,
    model: str,
    dataset_ids: str,
    key: str | None,
    checkpoint: Path | None,
    fit_on: str | None,
    chunk_size: int,
    dtype: str,
    device: str,
    min_coverage: float | None,
    params: tuple[str, ...],
    executor: str,
    address: str | None,
    workers: int | None,
    replace: bool,
    as_json: bool,
) -> None:
    """Embed data sets into the store, chunk by chunk; reruns resume.

    The pca and hvg baselines are fitted once, on --fit-on (or the data sets
    embedded the first time the key is used), and that fit is then applied
    unchanged to every later data set under the same key.
    """
    summary = store_from(ctx).embed(
        model,
        dataset_ids,
        key=key,
        checkpoint=checkpoint,
        fit_on=fit_on,
        chunk_size=chunk_size,
        dtype=dtype,
        replace=replace,
        show_progress=not as_json,
        device=device,
        min_coverage=min_coverage,
        executor=executor,
        address=address,
        workers=workers,
        **parse_params(params),
    )
    record = {
        "key": summary.key,
        "model": summary.model,
        "datasets": summary.datasets,
        "cells_embedded": summary.cells_embedded,
        "chunks_written": summary.chunks_written,
        "chunks_already_done": summary.chunks_resumed,
        "seconds": round(summary.seconds, 3),
        "cells_per_second": round(summary.cells_per_second, 1) if summary.cells_embedded else None,
        "failures": summary.failures,
        "filtered": summary.filtered,
        "filter_reason": summary.filter_reason or None,
        "device": summary.device,
    }
    if as_json:
        click.echo(json.dumps(record))
    else:
        rate = f", {summary.cells_per_second:,.0f} cells/s" if summary.cells_embedded else ""
        click.echo(
            f"{summary.key}: embedded {summary.cells_embedded} cells of "
            f"{', '.join(summary.datasets)} in {summary.seconds:.1f} s{rate} on "
            f"{summary.device} ({summary.chunks_resumed} chunks already done)"
        )
        listed = (
            f'listed with the reason by `scdrugmap sql "SELECT * FROM failures WHERE key = '
            f"'{summary.key}'\"`"
        )
        if summary.failures:
            click.echo(
                f"{summary.failures} cells had no expressed gene the model knows; they are {listed}"
            )
        if summary.filtered:
            click.echo(
                f"{summary.filtered} cells left out by the authors' filter: "
                f"{summary.filter_reason}; they are {listed}"
            )


@main.command()
@json_option()
@click.pass_context
def embeddings(ctx: click.Context, as_json: bool) -> None:
    """List stored embeddings with provenance and completeness."""
    frame = store_from(ctx).embeddings()
    if not as_json and not frame.empty:
        frame = frame.assign(
            chunks=frame["chunks_done"].astype(str) + "/" + frame["n_chunks"].astype(str),
            weights=frame["weights_sha256"].str[:12],
            coverage=frame["mean_coverage"].round(3),
        )[
            [
                "key",
                "dataset_id",
                "model",
                "dim",
                "dtype",
                "n_cells",
                "chunks",
                "complete",
                "coverage",
                "weights",
                "settings_hash",
            ]
        ]
    print_frame(frame, as_json, "embeddings")

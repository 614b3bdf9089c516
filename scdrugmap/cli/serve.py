"""`scdrugmap serve`: the web page and API over a store."""

from __future__ import annotations

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import DEVICE_OPTION, store_from


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--token",
    envvar="SCDRUGMAP_TOKEN",
    help="Secret every request must carry ($SCDRUGMAP_TOKEN); required off 127.0.0.1.",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=2048,
    show_default=True,
    help="Largest file a user may upload, and the most it may unpack to (gzip, HDF5).",
)
@click.option(
    "--max-line-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=64,
    show_default=True,
    help="Longest line of an uploaded table.",
)
@click.option(
    "--max-columns",
    type=click.IntRange(min=1),
    default=2_000_000,
    show_default=True,
    help="Most columns of an uploaded table (a column per cell when genes are rows).",
)
@click.option(
    "--job-memory-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Memory one job's process may use; past it the job fails alone "
    "[default: 3/4 of this machine's memory].",
)
@click.option(
    "--sql-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Most rows one SQL request returns.",
)
@click.option(
    "--sql-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Time limit of one SQL request.",
)
@click.option(
    "--sql-max-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=16,
    show_default=True,
    help="Largest answer of one SQL request (measured before it is fetched).",
)
@click.option(
    "--sql-memory-mb",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Memory one SQL request may use in DuckDB (it spills to a temporary folder).",
)
@DEVICE_OPTION
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    token: str | None,
    max_upload_mb: float,
    max_line_mb: float,
    max_columns: int,
    job_memory_mb: float | None,
    sql_rows: int,
    sql_seconds: float,
    sql_max_mb: float,
    sql_memory_mb: int,
    device: str,
) -> None:
    """Serve the store over HTTP: a web page and an API (OpenAPI at /api/openapi.json).

    A user uploads cells (h5ad, 10x .h5 or a table), picks a predictor kept by
    `scdrugmap train` and watches per-cell calls, a map of the cells and
    per-sample histograms appear. The API also lists data sets, embeddings,
    predictors, runs and results, and answers read-only SQL.

    Binds 127.0.0.1 by default. Any other address needs --token; the page is
    then opened as http://HOST:PORT/?token=TOKEN and API clients send
    'Authorization: Bearer TOKEN'.
    """
    from scdrugmap.serve.app import serve as run_server
    from scdrugmap.serve.settings import ServeSettings

    settings = ServeSettings(
        host=host,
        port=port,
        token=token or None,
        max_upload_bytes=int(max_upload_mb * 1024**2),
        max_line_bytes=int(max_line_mb * 1024**2),
        max_columns=max_columns,
        job_memory_bytes=int(job_memory_mb * 1024**2) if job_memory_mb else None,
        sql_max_rows=sql_rows,
        sql_seconds=sql_seconds,
        sql_max_bytes=int(sql_max_mb * 1024**2),
        sql_memory_mb=sql_memory_mb,
        device=device,
    ).check()
    store = store_from(ctx)
    shown = f"[{host}]" if ":" in host else host
    suffix = "/?token=<token>" if token else "/"
    click.echo(f"scdrugmap: serving {store.path} at http://{shown}:{port}{suffix} (Ctrl-C stops)")
    if not store.exists():
        click.echo(
            f"note: {store.path} holds no store yet; `ingest`, `embed` and `train` a predictor "
            "for the page to use (or pass --store)"
        )
    run_server(store, settings)

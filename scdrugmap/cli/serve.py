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
    help="Largest file a user may upload.",
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
@DEVICE_OPTION
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    token: str | None,
    max_upload_mb: float,
    sql_rows: int,
    sql_seconds: float,
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
        sql_max_rows=sql_rows,
        sql_seconds=sql_seconds,
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

"""`scdrugmap report`: the HTML report of the latest results."""

from __future__ import annotations

from pathlib import Path

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import store_from


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report directory (default: <store>/report).",
)
@click.pass_context
def report(ctx: click.Context, out: Path | None) -> None:
    """Write an HTML report with figures of the latest results."""
    store = store_from(ctx)
    path = store.report(out or store.path / "report")
    click.echo(f"wrote {path}")

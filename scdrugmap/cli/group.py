"""The `scdrugmap` group: `--store`, `--version`, and errors in one line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from scdrugmap.errors import ScdrugmapError

STORE_HELP = "Store directory (default: $SCDRUGMAP_STORE or ./scdrugmap-store)."


# click >= 8.2 raises this for a bare `scdrugmap`, to print the help; it stays as it is.
_HELP_FOR_NO_ARGUMENTS = getattr(click.exceptions, "NoArgsIsHelpError", ())


@contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    """A bad choice, a missing or an unknown option: one line and exit code 2, instead of
    click's usage block, so it reads like every other error of the command."""
    try:
        yield
    except _HELP_FOR_NO_ARGUMENTS:
        raise
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "scdrugmap"
        message = error.format_message().rstrip(".")
        click.echo(f"error: {message} (see `{command} --help`)", err=True)
        sys.exit(error.exit_code)


class _Group(click.Group):
    """Turns user-facing errors into one line: the library's with exit code 1, usage
    errors with exit code 2."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_errors_in_one_line():  # the group's own options and arguments
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _usage_errors_in_one_line():  # the command's name, options and arguments
                return super().invoke(ctx)
        except ScdrugmapError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=STORE_HELP,
)
@click.version_option(package_name="scdrugmap")
@click.pass_context
def main(ctx: click.Context, store: Path | None) -> None:
    """Predict drug response (sensitive / resistant) of single cancer cells.

    Ingest scRNA-seq data sets into a store, embed them (baselines or
    single-cell foundation models), then train and evaluate classifiers on the
    stored embeddings with honest, sample-grouped splits. Start with
    `scdrugmap demo`.
    """
    ctx.obj = {"store": store}

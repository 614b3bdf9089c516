"""Printing: rich tables for people, JSON records for scripts, run records and results.

pandas and rich are imported by the callers' data or inside the functions, so the
listing commands that print plain rows (`sql`, `datasets`, `models`) never load pandas.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import pandas as pd

    from scdrugmap.workflows.benchmark import RunRecord
    from scdrugmap.workflows.results import Storage

RESULTS_TITLE = "results: mean ± s.e.m. over folds (all test cells of each fold)"
CALIBRATION_TITLE = (
    "calibration of held-out probabilities: ECE (10 equal-width bins) and Brier score, "
    "before and after each fold's calibrator; lower is better"
)


def print_frame(frame: pd.DataFrame, as_json: bool, title: str | None = None) -> None:
    """A DataFrame as a rich table for people, or JSON records for scripts."""
    if as_json:
        click.echo(frame.to_json(orient="records", date_format="iso", default_handler=str))
        return
    print_rows(list(frame.columns), list(frame.itertuples(index=False)), False, title)


def print_rows(
    columns: Sequence[str], rows: Sequence[Sequence], as_json: bool, title: str | None = None
) -> None:
    """Rows as a rich table or as JSON records; needs neither pandas nor numpy."""
    if as_json:
        records = [dict(zip(columns, row)) for row in rows]
        click.echo(json.dumps(records, default=_json_default))
        return
    if not rows:
        click.echo(f"{title or 'result'}: nothing yet")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(Text(str(column)), overflow="fold")
    for row in rows:
        # Text, not str: a value such as "[optional.pkl]" is data, never rich markup.
        table.add_row(*(Text("" if _is_missing(v) else str(v)) for v in row))
    # Piped output has no terminal width; do not squeeze tables into 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _json_default(value: Any) -> Any:
    """Dates and numpy scalars from the catalog, which json cannot write by itself."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _is_missing(value: Any) -> bool:
    """None or NaN (the only value unequal to itself) prints as an empty cell."""
    try:
        return value is None or value != value
    except (TypeError, ValueError):
        return False


def report_run(record: RunRecord, as_json: bool) -> None:
    """One run (evaluate, finetune, zeroshot): its messages and its per-fold table."""
    from scdrugmap.workflows.results import results_table

    frame = record.results.assign(
        embedding=record.embedding,
        classifier=record.classifier,
        split=record.split,
        control=record.control or "",
        grouping=record.grouping,
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run_id": record.run_id,
                    "n_cells": record.n_cells,
                    "cell_level": record.cell_level,
                    "grouping": record.grouping,
                    "optimistic": record.cell_level,
                    "control": record.control,
                    "note": record.note,
                    "selection_message": record.selection_message,
                    "seconds": round(record.seconds, 3),
                    "results": json.loads(frame.to_json(orient="records")),
                }
            )
        )
        return
    if record.selection_message:
        click.echo(record.selection_message)
    if record.note:
        click.echo(f"note: {record.note}")
    print_frame(results_table(frame), False, f"{record.run_id} ({record.n_cells} cells)")


def print_results(store: Storage, as_json: bool, scope: str) -> None:
    """The store's latest results: the table people read, or one summary record per row."""
    from scdrugmap.workflows.results import calibration_table, results_summary, results_table

    if as_json:
        print_frame(results_summary(store, scope), True)
        return
    results = store.results()
    print_frame(results_table(results) if not results.empty else results, False, RESULTS_TITLE)
    calibration = calibration_table(results) if not results.empty else results
    if not calibration.empty:
        print_frame(calibration, False, CALIBRATION_TITLE)

"""Progress bars for long work, shown only where a person is watching."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(
    enabled: bool, total: int, description: str, unit: str = "cells"
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n, status="")`; draws a rich bar with rate, ETA and the latest
    status (a training loss, say) when enabled."""
    if not enabled:
        yield lambda n, status="": None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            if not speed:
                return Text(f"? {unit}/s")
            return Text(f"{speed:,.0f} {unit}/s" if speed >= 10 else f"{speed:.2f} {unit}/s")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(description, total=total, status="")
        yield lambda n, status="": bar.update(task, advance=n, status=status)

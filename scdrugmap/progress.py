"""Progress of long work: a bar where a person is watching, a listener where a program is.

The HTTP service runs predictions in a worker thread and shows their progress
in a web page. Rather than every layer between the service and the embedding
loop passing a callback down, the service installs a listener for its thread
with `progress_to`; every `progress_bar` opened in that context reports to it
(from whichever thread then advances the bar).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# (description, done, total, status) after every advance.
ProgressListener = Callable[[str, int, int, str], None]

_listener: ContextVar[ProgressListener | None] = ContextVar("progress_listener", default=None)


@contextmanager
def progress_to(listener: ProgressListener) -> Iterator[None]:
    """Send the progress of every bar opened in this context to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextmanager
def progress_bar(
    enabled: bool, total: int, description: str, unit: str = "cells"
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n, status="")`; draws a rich bar with rate, ETA and the latest
    status (a training loss, say) when enabled, and tells the context's listener."""
    listener = _listener.get()
    with _rich_bar(enabled, total, description, unit) as draw:
        if listener is None:
            yield draw
            return
        done = 0
        listener(description, 0, total, "")

        def advance(n: int, status: str = "") -> None:
            nonlocal done
            done += n
            draw(n, status)
            listener(description, done, total, status)

        yield advance


@contextmanager
def _rich_bar(
    enabled: bool, total: int, description: str, unit: str
) -> Iterator[Callable[..., None]]:
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

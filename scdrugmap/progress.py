"""Progress of long work: a bar where a person is watching, a listener where a program is.

The HTTP service runs predictions in a worker thread and shows their progress
in a web page. Rather than every layer between the service and the embedding
loop passing a callback down, the service installs a listener for its thread
with `progress_to`; every `progress_bar` opened in that context reports to it
(from whichever thread then advances the bar).
"""

from __future__ import annotations

import time
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
    enabled: bool,
    total: int,
    description: str,
    unit: str = "cells",
    started: float | None = None,
) -> Iterator[Callable[..., None]]:
    """Yield `advance(n, status="")`; draws a rich bar with rate, ETA and the latest
    status (a training loss, say) when enabled, and tells the context's listener.
    `unit="bytes"` shows sizes and rates in kB/MB/GB. `started`: the `time.perf_counter()`
    at which the work began, when the bar can only open after setting it up (its total
    unknown before), so that its clock and rate count the whole work, as a summary does."""
    listener = _listener.get()
    with _rich_bar(enabled, total, description, unit, started) as draw:
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
def progress_step(enabled: bool, description: str) -> Iterator[None]:
    """One step whose progress cannot be measured (a matrix decomposition): a spinner and
    the time it has taken when enabled, so a pause of seconds or minutes does not look
    like a hang; the context's listener hears it as work with no count (total 0)."""
    listener = _listener.get()
    if listener is not None:
        listener(description, 0, 0, "")
    if not enabled:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), SpinnerColumn(finished_text="done"))
    with Progress(*columns, TimeElapsedColumn()) as bar, _vanishing_on_error(bar):
        task = bar.add_task(description, total=None)
        yield
        bar.update(task, total=1, completed=1)


def wall_rate(completed: float, elapsed: float | None) -> float | None:
    """Units done per second of wall time since the bar opened: the figure a summary
    computes (done / elapsed). rich's own estimate counts only the time between the first
    and the last update and leaves out the first update's units, so for work reported in a
    few large chunks (an embedding run's) it read a hundred times the true rate."""
    if not completed or not elapsed:
        return None
    return completed / elapsed


def _rate_text(rate: float | None, unit: str) -> str:
    if rate is None:
        return f"? {unit}/s"
    if unit == "bytes":
        from rich.filesize import decimal

        return f"{decimal(int(rate))}/s"
    return f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2f} {unit}/s"


def _time_left(total: float, completed: float, rate: float | None) -> float | None:
    if completed >= total:
        return 0.0
    return (total - completed) / rate if rate else None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


@contextmanager
def _rich_bar(
    enabled: bool, total: int, description: str, unit: str, started: float | None
) -> Iterator[Callable[..., None]]:
    if not enabled:
        yield lambda n, status="": None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Column
    from rich.text import Text

    def task_rate(task) -> float | None:
        return wall_rate(task.completed, task.finished_time if task.finished else task.elapsed)

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(_rate_text(task_rate(task), unit))

    class RemainingColumn(ProgressColumn):
        """Time left at the rate shown, so the two columns never disagree."""

        def render(self, task) -> Text:
            left = _time_left(task.total, task.completed, task_rate(task))
            return Text(_clock(left), style="progress.remaining")

    whole = Column(no_wrap=True)  # a narrow terminal shortens the bar, never splits "kB/s"
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(table_column=whole)
        if unit == "bytes"
        else MofNCompleteColumn(table_column=whole),
        RateColumn(table_column=whole),
        TimeElapsedColumn(table_column=whole),
        TextColumn("eta"),
        RemainingColumn(table_column=whole),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, get_time=time.perf_counter) as bar, _vanishing_on_error(bar):
        task = bar.add_task(description, total=total, status="")
        if started is not None:
            bar.tasks[-1].start_time = started
        yield lambda n, status="": bar.update(task, advance=n, status=status)


@contextmanager
def _vanishing_on_error(bar) -> Iterator[None]:
    """A failed step leaves its one-line error, not a half-full bar above it."""
    try:
        yield
    except BaseException:
        bar.live.transient = True
        bar.live.stop()
        bar.disable = True  # so stopping does not print the blank line it adds in a file
        raise

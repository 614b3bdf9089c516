"""Progress reaches a listener installed for the work, from whichever thread advances it;
the bars drawn tell the true rate."""

from __future__ import annotations

import re
import threading
import time

import pytest

from scdrugmap.progress import progress_bar, progress_step, progress_to


def test_a_listener_hears_every_advance_of_bars_opened_in_its_context() -> None:
    heard = []
    with progress_to(lambda *event: heard.append(event)), progress_bar(False, 10, "work") as step:
        step(4)
        worker = threading.Thread(target=step, args=(6, "nearly"))
        worker.start()
        worker.join()
    assert heard == [("work", 0, 10, ""), ("work", 4, 10, ""), ("work", 10, 10, "nearly")]
    with progress_bar(False, 3, "unheard") as step:
        step(3)
    assert len(heard) == 3


def _drawn_rate(out: str, done: str) -> float:
    return float(re.search(rf"{done} ([\d.,]+) cells/s", out)[1].replace(",", ""))


def test_the_rate_drawn_is_the_units_over_the_wall_time(capsys) -> None:
    """rich's estimate left out the first update and the time before it: 5 / 0.5 here."""
    with progress_bar(True, 10, "work") as step:
        step(5)
        time.sleep(0.5)
        step(5)
    assert 15 < _drawn_rate(capsys.readouterr().out, "10/10") <= 20.5


def test_a_bar_opened_late_counts_from_when_the_work_started(capsys) -> None:
    with progress_bar(True, 10, "work", started=time.perf_counter() - 1.0) as step:
        step(10)
    assert 8 < _drawn_rate(capsys.readouterr().out, "10/10") <= 10


def test_a_step_without_a_count_is_heard_and_drawn(capsys) -> None:
    heard = []
    with progress_to(lambda *event: heard.append(event)), progress_step(True, "decomposing"):
        pass
    assert heard == [("decomposing", 0, 0, "")]
    assert "decomposing done" in capsys.readouterr().out


def test_a_failed_step_leaves_no_bar_behind(capsys) -> None:
    with pytest.raises(ValueError), progress_bar(True, 10, "work") as step:
        step(4)
        raise ValueError("bad value")
    with pytest.raises(ValueError), progress_step(True, "decomposing"):
        raise ValueError("bad value")
    assert capsys.readouterr().out == ""

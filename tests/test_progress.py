"""Progress reaches a listener installed for the work, from whichever thread advances it."""

from __future__ import annotations

import threading

from scdrugmap.progress import progress_bar, progress_to


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

"""Zero-shot: a chat model classifies each selected cell from its top genes."""

from __future__ import annotations

from collections.abc import Sequence

from scdrugmap.store.storage import Storage
from scdrugmap.zeroshot.client import ChatClient
from scdrugmap.zeroshot.run import ZeroShotRecord, ZeroShotSettings, run_zeroshot

__all__ = ["ZeroShotSettings", "zeroshot"]


def zeroshot(
    store: Storage,
    *,
    url: str,
    model: str,
    api_key: str | None = None,
    timeout: float = 60.0,
    where: str | None = None,
    datasets: str | Sequence[str] | None = "all",
    settings: ZeroShotSettings | None = None,
    show_progress: bool = False,
) -> ZeroShotRecord:
    """Ask the chat model at `url` for each cell's response; the run goes into the store."""
    client = ChatClient(url, model, api_key, timeout=timeout)
    return run_zeroshot(
        store,
        client,
        where=where,
        datasets=datasets,
        settings=settings or ZeroShotSettings(),
        show_progress=show_progress,
    )

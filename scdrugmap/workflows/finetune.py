"""Fine-tune: LoRA adapters and a head per fold, scored beside frozen-embedding runs."""

from __future__ import annotations

from scdrugmap.finetune.lora import LoraSettings
from scdrugmap.finetune.run import FinetuneRequest
from scdrugmap.finetune.run import finetune as finetune_folds
from scdrugmap.finetune.train import TrainSettings
from scdrugmap.store.storage import Storage

__all__ = ["FinetuneRequest", "LoraSettings", "TrainSettings", "finetune"]


def finetune(store: Storage, request: FinetuneRequest, show_progress: bool = False):
    """LoRA fine-tuning of a foundation model per fold (a `FinetuneRequest`); its
    held-out scores go to the catalog beside frozen-embedding runs."""
    store.require()
    return finetune_folds(store, request, show_progress=show_progress)

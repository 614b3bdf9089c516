"""`Store`: the Python API, a store directory you can run every operation on.

    import scdrugmap
    store = scdrugmap.open_store("my-store")
    store.ingest(["control.txt.gz", "erlotinib.txt.gz"],
                 IngestOptions("pc9", samples=["control", "erlotinib"],
                               labels=["sensitive", "resistant"], drug="erlotinib"))
    store.embed("pca")
    run = store.evaluate("pca", "lightgbm", "pooled")
    store.results()

Each method is the workflow function of the same name (`scdrugmap.workflows.*`) with
the store as its first argument, so `store.embed("pca")` and
`scdrugmap.workflows.embed.embed(store, "pca")` are one code path. The persistence
underneath (`Storage`) knows nothing of these operations.
"""

from __future__ import annotations

import os

from scdrugmap.embed.into_store import embed_into_store
from scdrugmap.store.storage import Storage
from scdrugmap.workflows.embed import embed
from scdrugmap.workflows.evaluate import evaluate
from scdrugmap.workflows.export import export
from scdrugmap.workflows.finetune import finetune
from scdrugmap.workflows.ingest import ingest
from scdrugmap.workflows.predict import predict
from scdrugmap.workflows.report import report
from scdrugmap.workflows.train import train_predictor


class Store(Storage):
    """A store directory (`catalog.duckdb`, `datasets/`, `embeddings/`, `fits/`) with
    the operations a user names as methods."""

    ingest = ingest
    embed = embed
    embed_with = embed_into_store
    evaluate = evaluate
    train_predictor = train_predictor
    predict = predict
    finetune = finetune
    report = report
    export = export


def open_store(path: str | os.PathLike | None = None) -> Store:
    """The store at `path` (default: $SCDRUGMAP_STORE or ./scdrugmap-store); it is created
    by the first ingest."""
    return Store(path)

"""`scdrugmap demo`: the whole pipeline on generated data, end to end.

The demo goes through the same doors a user does: it writes the generated
data sets as .h5ad files, ingests them with the real ingest path, embeds them
with both baselines, evaluates every classifier on the pooled and
cross-dataset splits and writes the report.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scdrugmap.data.demo import write_demo_files
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.store.store import Store

EMBEDDINGS = ("pca", "hvg")
CLASSIFIERS = ("logreg", "lightgbm", "mlp")
SPLITS = ("pooled", "cross-dataset")


@dataclass
class DemoOutcome:
    store: Store
    report: Path
    seconds: float


def run_demo(
    out_dir: Path, *, seed: int = 0, scale: float = 1.0, show_progress: bool = False
) -> DemoOutcome:
    started = time.perf_counter()
    store = Store(out_dir / "store")
    shutil.rmtree(store.path, ignore_errors=True)
    for path, dataset in write_demo_files(out_dir / "data", seed=seed, scale=scale):
        meta = dataset.metadata
        store.ingest(
            [path],
            IngestOptions(
                dataset_id=dataset.dataset_id,
                label_column="response",
                sensitive_values=["sensitive"],
                resistant_values=["resistant"],
                sample_column="sample",
                drug=meta.get("drug"),
                cancer_type=meta.get("cancer_type"),
                tissue=meta.get("tissue"),
                therapy=meta.get("therapy"),
                regimen=meta.get("regimen"),
                meta={"source": "scdrugmap demo", "seed": str(seed)},
            ),
        )
    for model in EMBEDDINGS:
        store.embed(model, "all", chunk_size=2_000, show_progress=show_progress)
    for embedding in EMBEDDINGS:
        for classifier in CLASSIFIERS:
            for split in SPLITS:
                store.evaluate(embedding, classifier, split, seed=seed, show_progress=show_progress)
    report = store.report(out_dir / "report")
    return DemoOutcome(store, report, time.perf_counter() - started)

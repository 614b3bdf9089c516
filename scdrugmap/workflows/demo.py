"""`scdrugmap demo`: the whole pipeline on generated data, end to end.

The demo goes through the same doors a user does: it writes the generated
data sets as .h5ad files, ingests them with the real ingest path, embeds them
with both baselines and, when the model extras are installed, with a real
pretrained language model (cells as text through the bundled
all-MiniLM-L6-v2), evaluates every classifier on the pooled and
cross-dataset splits, writes the report, and keeps a predictor so that
`scdrugmap serve` on the demo store has one to offer.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scdrugmap.data.demo import write_demo_files
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.workflows.api import Store

BASELINES = ("pca", "hvg")
# Short texts keep the language model's share of the demo to about a minute on a laptop CPU.
TEXT_OPTIONS = {"top_n": 16}
# The CPU build: a bare `torch` pulls a multi-GB CUDA build.
TEXT_EXTRAS = "pip install torch==2.13.0 && pip install 'scdrugmap[models,test]'"
CLASSIFIERS = ("logreg", "lightgbm", "mlp")
SPLITS = ("pooled", "cross-dataset")
PREDICTOR = {"embedding": "pca", "classifier": "logreg", "name": "demo-pca-logreg"}


@dataclass
class DemoOutcome:
    store: Store
    report: Path
    seconds: float
    embeddings: tuple[str, ...]
    skipped: str | None
    predictor: str
    upload_example: Path


def text_route_available() -> bool:
    """torch, transformers and the bundled encoder are all installed."""
    from importlib.util import find_spec

    from scdrugmap.embed.checkpoints import bundled_checkpoint

    modules = ("torch", "transformers")
    return all(find_spec(m) is not None for m in modules) and bundled_checkpoint("text") is not None


def run_demo(
    out_dir: Path, *, seed: int = 0, scale: float = 1.0, show_progress: bool = False
) -> DemoOutcome:
    started = time.perf_counter()
    store = Store(out_dir / "store")
    shutil.rmtree(store.path, ignore_errors=True)
    files = write_demo_files(out_dir / "data", seed=seed, scale=scale)
    for path, dataset in files:
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
    for model in BASELINES:
        store.embed(model, "all", chunk_size=2_000, show_progress=show_progress)
    embeddings, skipped = BASELINES, None
    if text_route_available():
        store.embed("text", "all", chunk_size=2_000, show_progress=show_progress, **TEXT_OPTIONS)
        embeddings = (*BASELINES, "text")
    else:
        skipped = f"text (cells through all-MiniLM-L6-v2) skipped: {TEXT_EXTRAS} to include it"
    for embedding in embeddings:
        for classifier in CLASSIFIERS:
            for split in SPLITS:
                store.evaluate(embedding, classifier, split, seed=seed, show_progress=show_progress)
    report = store.report(out_dir / "report")
    store.train_predictor(**PREDICTOR, seed=seed)
    return DemoOutcome(
        store,
        report,
        time.perf_counter() - started,
        embeddings,
        skipped,
        PREDICTOR["name"],
        files[0][0],
    )

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scdrugmap.data.demo import DemoDataset, write_demo_files
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
    # Wall seconds per stage ("ingest", "embed pca", "evaluate hvg × lightgbm", ...), in
    # order, and the CPU seconds of this process's threads in each (on a shared machine
    # the CPU figure moves less than the wall one).
    stages: dict[str, float] = field(default_factory=dict)
    stage_cpu: dict[str, float] = field(default_factory=dict)


class _StageClock:
    """Wall and CPU seconds of each named stage, so the demo can say where its time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


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
    clock = _StageClock()
    store = Store(out_dir / "store")
    shutil.rmtree(store.path, ignore_errors=True)
    with clock.stage("write files"):
        files = write_demo_files(out_dir / "data", seed=seed, scale=scale)
    with clock.stage("ingest"):
        for path, dataset in files:
            store.ingest([path], _ingest_options(dataset, seed))
    for model in BASELINES:
        with clock.stage(f"embed {model}"):
            store.embed(model, "all", chunk_size=2_000, show_progress=show_progress)
    embeddings, skipped = BASELINES, None
    if text_route_available():
        with clock.stage("embed text"):
            store.embed(
                "text", "all", chunk_size=2_000, show_progress=show_progress, **TEXT_OPTIONS
            )
        embeddings = (*BASELINES, "text")
    else:
        skipped = f"text (cells through all-MiniLM-L6-v2) skipped: {TEXT_EXTRAS} to include it"
    for embedding in embeddings:
        for classifier in CLASSIFIERS:
            with clock.stage(f"evaluate {embedding} × {classifier}"):
                for split in SPLITS:
                    store.evaluate(
                        embedding, classifier, split, seed=seed, show_progress=show_progress
                    )
    with clock.stage("report"):
        report = store.report(out_dir / "report")
    with clock.stage("train predictor"):
        store.train_predictor(**PREDICTOR, seed=seed)
    return DemoOutcome(
        store,
        report,
        time.perf_counter() - started,
        embeddings,
        skipped,
        PREDICTOR["name"],
        files[0][0],
        clock.seconds,
        clock.cpu,
    )


def _ingest_options(dataset: DemoDataset, seed: int) -> IngestOptions:
    """How a generated data set is ingested: labels from `response`, samples from `sample`."""
    meta = dataset.metadata
    return IngestOptions(
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
    )

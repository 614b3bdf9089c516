"""Benchmark: evaluate every embedding × classifier × split, going on past those that
cannot run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from scdrugmap.classify.evaluate import RunRecord
from scdrugmap.errors import ScdrugmapError
from scdrugmap.store.storage import Storage
from scdrugmap.workflows.evaluate import evaluate


@dataclass(frozen=True)
class BenchmarkStep:
    """One combination: its run, or why it could not run."""

    embedding: str
    classifier: str
    split: str
    record: RunRecord | None
    error: str | None

    @property
    def name(self) -> str:
        return f"{self.embedding} × {self.classifier} × {self.split}"


def benchmark(
    store: Storage,
    embeddings: Sequence[str],
    classifiers: Sequence[str],
    splits: Sequence[str],
    *,
    where: str | None = None,
    n_folds: int = 5,
    shots: int = 5,
    seed: int = 0,
    show_progress: bool = False,
) -> Iterator[BenchmarkStep]:
    """Each combination's step as soon as it is done, so a caller can report as it goes."""
    for embedding in embeddings:
        for classifier in classifiers:
            for split in splits:
                try:
                    record = evaluate(
                        store,
                        embedding,
                        classifier,
                        split,
                        where=where,
                        n_folds=n_folds,
                        shots=shots,
                        seed=seed,
                        show_progress=show_progress,
                    )
                except ScdrugmapError as error:
                    yield BenchmarkStep(embedding, classifier, split, None, str(error))
                    continue
                yield BenchmarkStep(embedding, classifier, split, record, None)

"""Benchmark: evaluate every embedding × classifier × split, going on past those that
cannot run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from scdrugmap.classify.evaluate import RunRecord, check_control
from scdrugmap.errors import ScdrugmapError
from scdrugmap.store.storage import Storage
from scdrugmap.workflows.evaluate import evaluate
from scdrugmap.workflows.fold_fits import RUN_SUFFIX, refit_per_fold


@dataclass(frozen=True)
class BenchmarkStep:
    """One combination (or its control): its run, or why it could not run."""

    embedding: str
    classifier: str
    split: str
    record: RunRecord | None
    error: str | None
    control: str | None = None

    @property
    def name(self) -> str:
        name = f"{self.embedding} × {self.classifier} × {self.split}"
        return f"{name} ({self.control} control)" if self.control else name


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
    control: str | None = None,
    fit_within_folds: bool = False,
    show_progress: bool = False,
) -> Iterator[BenchmarkStep]:
    """Each combination's step as soon as it is done, so a caller can report as it goes.

    With `control="shuffled"` each combination runs twice: as asked, then on the same
    folds with shuffled labels, so every real result has its chance level beside it.

    `fit_within_folds` refits a baseline embedding (pca, hvg) on each fold's training
    data sets; such runs are kept as "<key> (fit within folds)", beside the runs on the
    stored fit. Checkpoint models learned nothing from the store and run as they are."""
    check_control(control)
    runs = (None,) if control is None else (None, control)
    for embedding in embeddings:
        refit = None
        if fit_within_folds:
            try:
                refit = refit_per_fold(store, embedding, show_progress=show_progress)
            except ScdrugmapError as error:
                for classifier in classifiers:
                    for split in splits:
                        yield BenchmarkStep(embedding, classifier, split, None, str(error))
                continue
        run_name = embedding + RUN_SUFFIX if refit is not None else None
        for classifier in classifiers:
            for split in splits:
                for run_control in runs:
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
                            control=run_control,
                            fold_features=refit,
                            run_name=run_name,
                            show_progress=show_progress,
                        )
                    except ScdrugmapError as error:
                        yield BenchmarkStep(
                            embedding, classifier, split, None, str(error), run_control
                        )
                        break  # the control of a run that cannot run cannot run either
                    yield BenchmarkStep(embedding, classifier, split, record, None, run_control)

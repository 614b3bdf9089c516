"""The MLP head trained in numpy and in torch: seconds per fit and AUROC, same folds.

python -m benchmarks.mlp_backends [--full] [--folds 5] [--repeats 1]

Real PC9 cells (both samples) embedded with `pca` (50 dimensions) into a temporary
store, as in benchmarks/classifier_overhead.py; each pooled fold is fitted with both
backends on one thread (as every fit is), alternating, and scored on its held-out cells.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.classifier_overhead import FULL, QUARTER, build_store

BACKENDS = ("numpy", "torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help=f"the full PC9 files in {FULL}")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from scdrugmap.classify.evaluate import embedding_left_out, select_and_split
    from scdrugmap.classify.mlp import MLPHeadClassifier

    root = Path(tempfile.mkdtemp(prefix="scdrugmap-mlp-"))
    try:
        store = build_store(root, FULL if args.full else QUARTER)
        selection = select_and_split(
            store,
            None,
            "pooled",
            n_folds=args.folds,
            shots=5,
            seed=0,
            left_out=embedding_left_out(store, "pca"),
        )
        features, labels = store.load_embedding("pca", selection.cells), selection.labels
        print(f"PC9 {features.shape[0]:,} cells x {features.shape[1]} pca dims", flush=True)
        fold0 = selection.plan.folds[0]
        for backend in BACKENDS:  # imports and first-call costs out of the timings
            MLPHeadClassifier(backend=backend, max_epochs=1, min_steps=1).fit(
                features[fold0.train], labels[fold0.train]
            )
        seconds: dict[str, list[float]] = {b: [] for b in BACKENDS}
        scores: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for fold in selection.plan.folds:
            for _ in range(args.repeats):
                for backend in BACKENDS:
                    started = time.perf_counter()
                    model = MLPHeadClassifier(backend=backend).fit(
                        features[fold.train], labels[fold.train]
                    )
                    seconds[backend].append(time.perf_counter() - started)
                    prob = model.predict_proba(features[fold.test])[:, 1]
                    scores[backend].append(roc_auc_score(labels[fold.test], prob))
            print(
                f"fold {fold.name}: "
                + "  ".join(
                    f"{b} {seconds[b][-1]:.2f} s AUROC {scores[b][-1]:.4f}" for b in BACKENDS
                ),
                flush=True,
            )
        for backend in BACKENDS:
            print(
                f"{backend}: {statistics.median(seconds[backend]):.2f} s a fit (median), "
                f"mean AUROC {np.mean(scores[backend]):.4f}"
            )
        speedup = statistics.median(seconds["numpy"]) / statistics.median(seconds["torch"])
        gap = abs(np.mean(scores["torch"]) - np.mean(scores["numpy"]))
        print(f"torch {speedup:.2f}x numpy per fit; AUROC gap {gap:.4f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

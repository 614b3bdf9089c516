"""ECE and Brier score of held-out cells before and after calibration, on the real test data.

`python -m benchmarks.calibration` evaluates logreg and mlp on the pca embedding of the
PC9 quarter and of each SCAD table (pooled split, 5 folds; each fold's calibrator chosen
and fitted on its training cells only) and prints, per data set and classifier, the mean
over folds of ECE (10 equal-width bins) and Brier score before and after, the method
each fold chose and what its inner folds held out, and what calibrating costs: the
seconds of choosing and fitting a calibrator on all the data set's cells over those of
one plain fit of the classifier on them (a ratio, both measured in this run).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from scdrugmap import Store
from scdrugmap.classify.calibration import fit_calibration
from scdrugmap.classify.classifiers import make_classifier
from scdrugmap.classify.evaluate import _copy_hashes
from tests.store_builders import ingest_pc9, scad_options

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
CLASSIFIERS = ("logreg", "mlp")


def _stores(root: Path) -> dict[str, tuple[Store, str]]:
    pc9 = Store(root / "pc9")
    ingest_pc9(pc9, DATA / "pc9_erlotinib", drug="erlotinib")
    pc9.embed("pca", chunk_size=5000)
    scad = Store(root / "scad")
    scad.ingest([DATA / "scad" / "PLX4720.tsv.gz"], scad_options("plx4720", "PLX4720"))
    scad.ingest([DATA / "scad" / "Afatinib.tsv.gz"], scad_options("afatinib", "Afatinib"))
    scad.embed("pca", n_components=20)
    return {
        "pc9": (pc9, "dataset_id = 'pc9'"),
        "scad plx4720": (scad, "dataset_id = 'plx4720'"),
        "scad afatinib": (scad, "dataset_id = 'afatinib'"),
    }


def _cost_ratio(store: Store, where: str, classifier: str) -> float:
    """Seconds of `fit_calibration` over seconds of one plain fit, on the same cells."""
    columns = ("dataset_id", "cell_index", "label", "sample", "n_genes", "content_hash")
    cells = store.cells(where, columns=columns)
    features = store.load_embedding("pca", cells)
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    started = time.perf_counter()
    make_classifier(classifier).fit(features, labels)
    plain = time.perf_counter() - started
    started = time.perf_counter()
    fit_calibration(
        lambda: make_classifier(classifier),
        features,
        labels,
        (cells["dataset_id"] + "/" + cells["sample"]).to_numpy(dtype=str),
        cells["dataset_id"].to_numpy(dtype=str),
        _copy_hashes(cells),
    )
    return (time.perf_counter() - started) / plain


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        stores = _stores(Path(folder))
        print(
            f"{'data':14} {'classifier':10} {'ece':>6} {'ece cal':>7} {'brier':>6} "
            f"{'brier cal':>9}  methods (inner grouping)  run seconds; calibration / plain fit"
        )
        for name, (store, where) in stores.items():
            for classifier in CLASSIFIERS:
                record = store.evaluate("pca", classifier, "pooled", where=where)
                pooled = record.results[record.results["scope"] == "pooled"]
                means = pooled.groupby("metric")["value"].mean()
                params = store.query(
                    "SELECT params FROM runs WHERE run_id = ?", [record.run_id]
                ).iloc[0, 0]
                folds = json.loads(params)["calibration"].values()
                methods = Counter(f"{f['method']} ({f['grouping']})" for f in folds)
                ratio = _cost_ratio(store, where, classifier)
                print(
                    f"{name:14} {classifier:10} {means['ece']:6.3f} {means['ece_calibrated']:7.3f} "
                    f"{means['brier']:6.3f} {means['brier_calibrated']:9.3f}  "
                    f"{', '.join(f'{n}x {m}' for m, n in methods.items())}  "
                    f"{record.seconds:.1f} s; {ratio:.1f}x; folds held out by {record.grouping}"
                )


if __name__ == "__main__":
    main()

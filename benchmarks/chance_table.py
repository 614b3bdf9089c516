"""The results table read against chance, on the real SCAD tables and PC9 cells.

For pca and hvg with logreg, lightgbm, mlp and knn: each split's grouping, F1 of the
sensitive class beside f1_chance (every cell called sensitive), MCC and AUROC, and
the shuffled-label control's AUROC and MCC on the same folds. On SCAD the
cross-dataset runs are repeated with the baselines fitted within folds.

    python -m benchmarks.chance_table [--full] [--out DIR]

`--full` reads the full PC9 files from ../shared (6,000 + 8,600 cells) instead of the
quarter kept in tests/data. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from scdrugmap import Store
from scdrugmap.report.chance import with_controls
from scdrugmap.workflows.benchmark import benchmark
from scdrugmap.workflows.results import results_summary
from tests.store_builders import ingest_pc9, scad_options

REPOSITORY = Path(__file__).parents[1]
TESTS_DATA = REPOSITORY / "tests" / "data"
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
EMBEDDINGS = ("pca", "hvg")
CLASSIFIERS = ("logreg", "lightgbm", "mlp", "knn")
COLUMNS = {
    "grouping": "grouping",
    "f1_sensitive_mean": "F1",
    "f1_chance_mean": "f1_chance",
    "mcc_mean": "MCC",
    "auroc_mean": "AUROC",
    "auroc_shuffled_mean": "AUROC shuffled",
    "mcc_shuffled_mean": "MCC shuffled",
}


def _scad_store(folder: Path) -> Store:
    store = Store(folder / "scad")
    for drug in ("PLX4720", "Afatinib"):
        store.ingest([TESTS_DATA / "scad" / f"{drug}.tsv.gz"], scad_options(drug.lower(), drug))
    return store


def _pc9_store(folder: Path, full: bool) -> Store:
    store = Store(folder / "pc9")
    ingest_pc9(store, (SHARED_DATA if full else TESTS_DATA) / "pc9_erlotinib", drug="erlotinib")
    return store


def _run(store: Store, splits: tuple[str, ...], *, fit_within_folds: bool = False) -> None:
    for step in benchmark(
        store,
        EMBEDDINGS,
        CLASSIFIERS,
        splits,
        control="shuffled",
        fit_within_folds=fit_within_folds,
    ):
        if step.record is None:
            print(f"skipped {step.name}: {step.error}", flush=True)


def _table(store: Store, data: str) -> pd.DataFrame:
    summary = with_controls(results_summary(store))
    rows = summary.assign(data=data)[["data", "embedding", "classifier", "split", *COLUMNS]]
    return rows.rename(columns=COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full PC9 files from ../shared")
    parser.add_argument("--out", type=Path, help="keep the stores here (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        scad = _scad_store(folder)
        for model in EMBEDDINGS:
            scad.embed(model)
        _run(scad, ("pooled", "cross-dataset"))
        _run(scad, ("cross-dataset",), fit_within_folds=True)
        pc9 = _pc9_store(folder, args.full)
        for model in EMBEDDINGS:
            pc9.embed(model)
        _run(pc9, ("pooled",))
        table = pd.concat([_table(scad, "SCAD"), _table(pc9, "PC9")], ignore_index=True)
    print(_markdown(table))


def _markdown(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

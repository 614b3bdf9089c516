"""Builders of small real stores (real files, real ingest) shared by the tests."""

from __future__ import annotations

from pathlib import Path

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from tests.synthetic import counts_matrix, write_genes_by_cells

SAMPLE_LABELS = (("s1", "sensitive"), ("s2", "sensitive"), ("r1", "resistant"), ("r2", "resistant"))


def ingest_pc9(store: Store, folder: Path, **metadata: str) -> dict:
    """Both real PC9 samples of `folder` as data set 'pc9': untreated cells sensitive, the
    erlotinib survivors resistant."""
    return store.ingest(
        [folder / "Day11_control.txt.gz", folder / "Day11_Erlotinib.txt.gz"],
        IngestOptions(
            dataset_id="pc9",
            samples=["control", "erlotinib"],
            labels=["sensitive", "resistant"],
            **metadata,
        ),
    )


def scad_options(dataset_id: str, drug: str) -> IngestOptions:
    """A SCAD table: cells as rows, labels in `response` (1 sensitive), z-scored values."""
    return IngestOptions(
        dataset_id=dataset_id,
        label_column="response",
        sensitive_values=["1"],
        resistant_values=["0"],
        values="normalized",
        drug=drug,
    )


def ingest_synthetic(
    store: Store,
    dataset_id: str,
    files_dir: Path,
    *,
    cells_per_sample: int = 60,
    seed: int = 0,
    genes: list[str] | None = None,
    fold_change: float = 4.0,
) -> None:
    """One data set of four samples (two per label), one file per sample; `genes` names
    the 300 columns (default GENE0000...)."""
    files_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for offset, (sample, label) in enumerate(SAMPLE_LABELS):
        counts = counts_matrix(
            cells_per_sample, label == "resistant", seed * 10 + offset, fold_change=fold_change
        )
        files.append(
            write_genes_by_cells(
                files_dir / f"{dataset_id}_{sample}.tsv", counts, genes, prefix=f"{sample}-"
            )
        )
    store.ingest(
        files,
        IngestOptions(
            dataset_id=dataset_id,
            samples=[s for s, _ in SAMPLE_LABELS],
            labels=[lab for _, lab in SAMPLE_LABELS],
            drug="drugA" if seed % 2 == 0 else "drugB",
            tissue="cell line",
        ),
    )


def synthetic_store(
    root: Path,
    n_datasets: int = 2,
    cells_per_sample: int = 60,
    genes: list[str] | None = None,
    fold_change: float = 4.0,
) -> Store:
    store = Store(root / "store")
    for i in range(n_datasets):
        ingest_synthetic(
            store,
            f"ds{i}",
            root / "files",
            cells_per_sample=cells_per_sample,
            seed=i,
            genes=genes,
            fold_change=fold_change,
        )
    return store


def store_with_pca_run(root: Path):
    """Two labelled data sets (240 cells) embedded with PCA and cross-validated with logreg
    (pooled, 2 folds); returns the store and that run's record."""
    store = synthetic_store(root, n_datasets=2, cells_per_sample=30)
    store.embed("pca", n_components=8)
    return store, store.evaluate("pca", "logreg", "pooled", n_folds=2)

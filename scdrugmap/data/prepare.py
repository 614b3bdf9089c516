"""From input files and options to one validated, in-memory data set.

`prepare_dataset` is pure: it reads and checks everything and writes nothing,
so the store only ever sees a data set that is complete and valid (a bad
file or option fails before the store is touched).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from scdrugmap.data.content_hash import content_hashes
from scdrugmap.data.genes import (
    classify_gene_ids,
    dominant_id_type,
    gene_id_kinds,
    normalise_gene_ids,
)
from scdrugmap.data.label_conflicts import label_conflicts
from scdrugmap.data.readers import (
    ORIENTATIONS,
    SourceTable,
    check_readable,
    read_matrix_file,
)
from scdrugmap.data.source import file_error
from scdrugmap.data.validate import (
    NORMALIZED_FIX,
    check_dataset_id,
    check_gene_ids,
    check_source,
    check_value_kind,
)
from scdrugmap.errors import InputError
from scdrugmap.progress import progress_bar

LABELS = ("sensitive", "resistant")
UNKNOWN = "unknown"
# obs columns prepare_dataset computes; a file's own column of the same name is
# kept as orig_<name> unless it holds the same values.
OBS_COLUMNS = ("barcode", "sample", "label", "n_counts", "n_genes", "source_file")
_FILE_SUFFIXES = (".gz", ".tsv", ".txt", ".csv", ".h5ad", ".h5", ".hdf5", ".mtx")


@dataclass
class IngestOptions:
    dataset_id: str
    samples: list[str] = field(default_factory=list)  # per file, in file order (--sample)
    labels: list[str] = field(default_factory=list)  # per file: 'sensitive' | 'resistant'
    label_column: str | None = None  # for files that carry labels
    sensitive_values: list[str] = field(default_factory=list)
    resistant_values: list[str] = field(default_factory=list)
    sample_column: str | None = None
    drug: str | None = None
    cancer_type: str | None = None
    tissue: str | None = None
    therapy: str | None = None
    regimen: str | None = None
    species: str = "human"
    meta: dict[str, str] = field(default_factory=dict)
    orientation: str = "auto"  # auto | genes-by-cells | cells-by-genes
    values: str = "counts"  # counts | normalized


@dataclass
class PreparedDataset:
    dataset_id: str
    counts: sparse.csr_matrix  # cells x genes, float32, canonical
    var: pd.DataFrame  # index = gene names; columns gene_id, id_type
    obs: pd.DataFrame  # index = barcode; OBS_COLUMNS + the files' extra columns as text
    metadata: dict
    # Per cell, data/content_hash.py's hash of its genes and values (cells.content_hash).
    content_hashes: np.ndarray
    # One line each: what is valid but probably not what the user meant (all cells of one
    # label, say); the CLI prints them, API callers read them here.
    warnings: list[str] = field(default_factory=list)


def prepare_dataset(
    files: Sequence[Path], options: IngestOptions, *, show_progress: bool = False
) -> PreparedDataset:
    """Read, check and merge `files` into one data set (cells concatenated, genes united).

    Raises InputError, one line naming the file or option, the problem and the fix.
    `show_progress` draws a bar of the bytes read (big gzipped tables take minutes).
    """
    paths = [Path(f) for f in files]
    _check_options(len(paths), options)
    for path in paths:
        check_readable(path)  # every path, before minutes go into reading the first
    return _assemble(_read_tables(paths, options, show_progress), options)


def prepare_tables(
    tables: Sequence[SourceTable], options: IngestOptions, *, counts_fix: str = NORMALIZED_FIX
) -> PreparedDataset:
    """Tables already in memory (an AnnData a caller holds, say) through the same checks
    and merge as files, so a data set does not depend on where its cells came from.

    `counts_fix` is the remedy named when values are not counts, worded for the caller
    (the default names the CLI's --values). The tables' matrices are not modified."""
    _check_options(len(tables), options)
    for table in tables:
        check_source(table, options.values, counts_fix=counts_fix)
    return _assemble(list(tables), options)


def _assemble(tables: list[SourceTable], options: IngestOptions) -> PreparedDataset:
    """Checked tables merged into one data set: labels, samples, the union of genes,
    unique barcodes, per-cell totals and the gene identifier census."""
    paths = [t.path for t in tables]
    labels = np.concatenate([_labels(t, i, options) for i, t in enumerate(tables)])
    samples = np.concatenate([_samples(t, i, len(tables), options) for i, t in enumerate(tables)])
    genes, counts = _merge_genes(tables)
    where = ", ".join(str(p) for p in paths)
    check_gene_ids(where, genes)
    barcodes, prefixed = _unique_barcodes(tables, samples, where)

    counts.eliminate_zeros()
    counts.sum_duplicates()
    obs = pd.DataFrame(
        {
            "barcode": barcodes,
            "sample": samples,
            "label": labels,
            "n_counts": np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel(),
            "n_genes": np.diff(counts.indptr).astype(np.int64),
            "source_file": np.repeat([p.name for p in paths], [t.counts.shape[0] for t in tables]),
        },
        index=pd.Index(barcodes, dtype=object),
    )
    obs = _add_file_columns(obs, tables)
    var = pd.DataFrame(
        {"gene_id": normalise_gene_ids(genes), "id_type": gene_id_kinds(genes)},
        index=pd.Index(genes, dtype=object),
    )
    # By normalised identifier, so two files of the same cells agree however their genes
    # are named, ordered or padded.
    hashes = content_hashes(counts, var["gene_id"].tolist())
    conflicts = label_conflicts(where, hashes, labels, obs["n_genes"].to_numpy(), barcodes)
    gene_ids = classify_gene_ids(genes)
    gene_ids["dominant"] = dominant_id_type(gene_ids)
    metadata = {
        "drug": options.drug,
        "cancer_type": options.cancer_type,
        "tissue": options.tissue,
        "therapy": options.therapy,
        "regimen": options.regimen,
        "species": options.species,
        "meta": dict(options.meta),
        "values": options.values,
        "gene_ids": gene_ids,
        "source_files": [p.name for p in paths],
        "barcode_prefixed": prefixed,
    }
    warnings = _label_warnings(options.dataset_id, labels) + conflicts
    return PreparedDataset(options.dataset_id, counts, var, obs, metadata, hashes, warnings)


def _read_tables(
    paths: list[Path], options: IngestOptions, show_progress: bool
) -> list[SourceTable]:
    """Each file read and checked in turn, under a bar counting its stored bytes (which
    vanishes when the file fails, leaving the error alone)."""
    tables = []
    for path in paths:
        size = _stored_bytes(path)
        with progress_bar(show_progress, size, f"reading {path.name}", unit="bytes") as advance:
            position = _Position(advance, size)
            table = read_matrix_file(path, options.orientation, position.reached)
            position.reached(size)
            check_source(table, options.values)
        tables.append(table)
    return tables


def _stored_bytes(path: Path) -> int:
    """What the bar counts for one input: a file's size; a 10x directory's files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


class _Position:
    """Turns a reader's position in a file into the bar's steps: forward only and at most
    the file's size, since a reader may pass over the same bytes twice (a fallback parser
    starting again)."""

    def __init__(self, advance: Callable[[int], None], size: int) -> None:
        self.advance, self.size, self.done = advance, size, 0

    def reached(self, position: int) -> None:
        position = min(position, self.size)
        if position > self.done:
            self.advance(position - self.done)
            self.done = position


def _label_warnings(dataset_id: str, labels: np.ndarray) -> list[str]:
    """A data set whose cells all carry one label is valid (one arm of a study), but no
    classifier learns from it alone, and it is what a mislabelled ingest looks like."""
    found = set(labels.tolist())
    if len(found) != 1 or found == {UNKNOWN}:
        return []
    (label,) = found
    other = LABELS[1] if label == LABELS[0] else LABELS[0]
    return [
        f"all {len(labels)} cells of {dataset_id!r} are labelled {label}; classifiers need "
        f"{other} cells too (a --label per file, or another data set)"
    ]


def _check_options(n: int, options: IngestOptions) -> None:
    """The options fit `n` input files (or in-memory tables)."""
    check_dataset_id(options.dataset_id)
    check_value_kind(options.values)
    if options.orientation not in ORIENTATIONS:
        raise InputError(
            f"--orientation {options.orientation!r}: unknown orientation; "
            f"use one of {list(ORIENTATIONS)}"
        )
    if n == 0:
        raise InputError("no input files; give one or more files to ingest")
    if options.labels and options.label_column:
        raise InputError(
            "--label and --label-column: give labels per file or read them from a column, not both"
        )
    if options.labels:
        if len(options.labels) != n:
            raise InputError(
                f"--label given {len(options.labels)} times for {n} files; give one per file, "
                "in file order (--label sensitive --label resistant)"
            )
        wrong = sorted({x for x in options.labels if x.strip().lower() not in LABELS})
        if wrong:
            raise InputError(f"--label {wrong[0]!r}: unknown label; use sensitive or resistant")
    mapped = options.sensitive_values or options.resistant_values
    if options.label_column and not mapped:
        raise InputError(
            f"--label-column {options.label_column!r}: say which values mean what with "
            "--sensitive and --resistant"
        )
    if mapped and not options.label_column:
        raise InputError("--sensitive/--resistant need --label-column, the column they refer to")
    both = _strip(options.sensitive_values) & _strip(options.resistant_values)
    if both:
        raise InputError(
            f"--sensitive and --resistant both list {sorted(both)[0]!r}; a value has one meaning"
        )
    if options.samples and options.sample_column:
        raise InputError(
            "--sample and --sample-column: name samples per file or read them from a column, "
            "not both"
        )
    if options.samples and len(options.samples) != n:
        raise InputError(
            f"--sample given {len(options.samples)} times for {n} files; give one per file, "
            "in file order"
        )
    if any(not s.strip() for s in options.samples):
        raise InputError("--sample '': sample names cannot be empty")


def _strip(values: Sequence[str]) -> set[str]:
    return {str(v).strip() for v in values}


def _labels(table: SourceTable, i: int, options: IngestOptions) -> np.ndarray:
    n_cells = table.counts.shape[0]
    if options.labels:
        return np.full(n_cells, options.labels[i].strip().lower(), dtype=object)
    if not options.label_column:
        return np.full(n_cells, UNKNOWN, dtype=object)
    values = _column_text(table, options.label_column, "--label-column")
    sensitive = values.isin(_strip(options.sensitive_values)).to_numpy()
    resistant = values.isin(_strip(options.resistant_values)).to_numpy()
    outside = values[~(sensitive | resistant)].unique()
    if len(outside):
        shown = ", ".join(repr(v) for v in sorted(outside)[:5])
        raise file_error(
            table.path,
            f"column {options.label_column!r} holds values mapped to no label: {shown}",
            "list each value under --sensitive or --resistant (or drop those cells)",
        )
    return np.where(sensitive, LABELS[0], LABELS[1]).astype(object)


def _samples(table: SourceTable, i: int, n_files: int, options: IngestOptions) -> np.ndarray:
    n_cells = table.counts.shape[0]
    if options.samples:
        return np.full(n_cells, options.samples[i].strip(), dtype=object)
    if options.sample_column:
        values = _column_text(table, options.sample_column, "--sample-column")
        if (values == "").any():
            raise file_error(
                table.path,
                f"column {options.sample_column!r} is empty for {int((values == '').sum())} cells",
                "give every cell a sample name",
            )
        return values.to_numpy(dtype=object)
    name = file_stem(table.path) if n_files > 1 else options.dataset_id
    return np.full(n_cells, name, dtype=object)


def file_stem(path: Path) -> str:
    """Day11_control.txt.gz -> Day11_control; a 10x matrix file -> its directory's name."""
    name = path.name
    while name.lower().endswith(_FILE_SUFFIXES):
        name = name[: name.rindex(".")]
    if name.lower() == "matrix" or path.name.lower().endswith((".mtx", ".mtx.gz")):
        return path.parent.name
    return name


def _column_text(table: SourceTable, column: str, option: str) -> pd.Series:
    if column not in table.obs.columns:
        available = ", ".join(repr(str(c)) for c in table.obs.columns) or "none"
        raise file_error(
            table.path,
            f"no column {column!r} for {option} (per-cell columns: {available})",
            f"name one of those columns with {option}",
        )
    return _as_text(table.obs[column])


def _as_text(column: pd.Series) -> pd.Series:
    """Per-cell values as stripped text; whole-number floats lose '.0' so 1.0 matches '1'."""
    values = column.reset_index(drop=True)
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if len(finite) and (finite == np.floor(finite)).all():
            values = values.astype("Int64")
    text = values.astype(object).where(values.notna(), "")
    return text.astype(str).str.strip()


def _merge_genes(tables: list[SourceTable]) -> tuple[list[str], sparse.csr_matrix]:
    """Union of genes in first-seen order; each file's columns moved to their union position."""
    union = pd.Index(tables[0].genes, dtype=object)
    for table in tables[1:]:
        genes = pd.Index(table.genes, dtype=object)
        union = union.append(genes[~genes.isin(union)])
    parts = []
    for table in tables:
        position = union.get_indexer(pd.Index(table.genes, dtype=object))
        c = table.counts
        parts.append(
            sparse.csr_matrix(
                (c.data, position[c.indices], c.indptr), shape=(c.shape[0], len(union))
            )
        )
    # The parts share their tables' values (a caller's own matrix, for an AnnData), so
    # only the stacked copy is sorted in place.
    counts = sparse.vstack(parts, format="csr", dtype=np.float32)
    counts.sort_indices()
    return union.tolist(), counts


def _unique_barcodes(
    tables: list[SourceTable], samples: np.ndarray, where: str
) -> tuple[np.ndarray, bool]:
    """Barcodes as given, or all prefixed with `<sample>_` when files share some."""
    barcodes = np.concatenate([np.asarray(t.barcodes, dtype=object) for t in tables])
    if not pd.Index(barcodes).duplicated().any():
        return barcodes, False
    prefixed = (
        pd.Series(samples, dtype=object) + "_" + pd.Series(barcodes, dtype=object)
    ).to_numpy()
    if pd.Index(prefixed).duplicated().any():
        raise InputError(
            f"{where}: cell barcodes repeat across files even after prefixing them with the "
            "sample name; give each file its own --sample"
        )
    return prefixed, True


def _blank(n: int) -> pd.Series:
    return pd.Series(np.full(n, "", dtype=object), dtype=object)


def _add_file_columns(obs: pd.DataFrame, tables: list[SourceTable]) -> pd.DataFrame:
    """The files' own per-cell columns, as text ('' where a file lacks the column)."""
    names: list[str] = []
    for table in tables:
        names += [str(c) for c in table.obs.columns if str(c) not in names]
    extra = {}
    for name in names:
        parts = [
            _as_text(t.obs[name])
            if name in t.obs.columns
            else pd.Series(np.full(len(t.obs), "", dtype=object))
            for t in tables
        ]
        text = pd.concat(parts, ignore_index=True).to_numpy(dtype=object)
        if name in OBS_COLUMNS:
            if np.array_equal(text, obs[name].astype(str).to_numpy(dtype=object)):
                continue
            name = f"orig_{name}"
        extra[name] = text
    return obs.assign(**extra) if extra else obs

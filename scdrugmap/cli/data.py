"""Data commands: ingest, datasets, sql, export."""

from __future__ import annotations

from pathlib import Path

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import csv_list, json_option, store_from, store_path
from scdrugmap.cli.output import print_frame, print_rows


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dataset", "dataset_id", required=True, help="Identifier of the new data set.")
@click.option(
    "--sample",
    "samples",
    multiple=True,
    help="Sample name of each file, in file order (repeat per file).",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    type=click.Choice(["sensitive", "resistant"]),
    help="Label of each file's cells, in file order (repeat per file).",
)
@click.option("--label-column", help="Column holding labels, for files that carry them.")
@click.option(
    "--sensitive",
    "sensitive_values",
    help="Label-column value(s) meaning sensitive, comma-separated.",
)
@click.option(
    "--resistant",
    "resistant_values",
    help="Label-column value(s) meaning resistant, comma-separated.",
)
@click.option("--sample-column", help="Column holding each cell's sample.")
@click.option("--drug", help="Drug the cells were exposed to.")
@click.option("--cancer-type", help='Cancer type, e.g. "lung adenocarcinoma".')
@click.option("--tissue", help='Tissue or source, e.g. "cell line".')
@click.option("--therapy", help="Therapy type, e.g. targeted, chemotherapy, immunotherapy.")
@click.option("--regimen", help="Regimen, e.g. monotherapy or a combination.")
@click.option("--species", default="human", show_default=True, help="Species of the cells.")
@click.option("--meta", "meta", multiple=True, help="Free metadata KEY=VALUE (repeatable).")
@click.option(
    "--orientation",
    type=click.Choice(["auto", "genes-by-cells", "cells-by-genes"]),
    default="auto",
    show_default=True,
    help="Layout of delimited tables.",
)
@click.option(
    "--values",
    "values",
    type=click.Choice(["counts", "normalized"]),
    default="counts",
    show_default=True,
    help="counts: raw integer counts (required by foundation models); normalized: "
    "already normalised or z-scored values (baselines only).",
)
@click.option("--replace", is_flag=True, help="Overwrite a data set with the same identifier.")
@json_option("Print the new data set as JSON.")
@click.pass_context
def ingest(
    ctx: click.Context,
    files: tuple[Path, ...],
    dataset_id: str,
    samples: tuple[str, ...],
    labels: tuple[str, ...],
    label_column: str | None,
    sensitive_values: str | None,
    resistant_values: str | None,
    sample_column: str | None,
    drug: str | None,
    cancer_type: str | None,
    tissue: str | None,
    therapy: str | None,
    regimen: str | None,
    species: str,
    meta: tuple[str, ...],
    orientation: str,
    values: str,
    replace: bool,
    as_json: bool,
) -> None:
    """Add a data set built from one or more FILES to the store.

    FILES may be .h5ad, 10x (matrix directory or .h5) or delimited tables
    (.tsv/.csv/.txt, optionally .gz) with genes as rows or as columns. Each
    file is one sample with one label (--sample/--label per file), or the
    files carry labels in a column (--label-column with --sensitive and
    --resistant). The data set is validated in full before anything is
    written; a failure leaves the store as it was.

    \b
    Example (PC9 cells, untreated = sensitive, erlotinib survivors = resistant):
      scdrugmap ingest Day11_control.txt.gz Day11_Erlotinib.txt.gz --dataset pc9 \\
        --sample control --sample erlotinib --label sensitive --label resistant \\
        --drug erlotinib --cancer-type "lung adenocarcinoma" --tissue "cell line" \\
        --therapy targeted
    """
    import pandas as pd

    from scdrugmap.errors import InputError
    from scdrugmap.workflows.ingest import IngestOptions, ingest

    meta_pairs = {}
    for item in meta:
        if "=" not in item:
            raise InputError(f"--meta {item!r}: give KEY=VALUE")
        k, v = item.split("=", 1)
        meta_pairs[k.strip()] = v.strip()
    options = IngestOptions(
        dataset_id=dataset_id,
        samples=list(samples),
        labels=list(labels),
        label_column=label_column,
        sensitive_values=csv_list(sensitive_values),
        resistant_values=csv_list(resistant_values),
        sample_column=sample_column,
        drug=drug,
        cancer_type=cancer_type,
        tissue=tissue,
        therapy=therapy,
        regimen=regimen,
        species=species,
        meta=meta_pairs,
        orientation=orientation,
        values=values,
    )
    row = ingest(store_from(ctx), files, options, replace=replace, show_progress=not as_json)
    if as_json:
        print_frame(pd.DataFrame([row]), True)
    else:
        click.echo(
            f"ingested {row['dataset_id']}: {row['n_cells']} cells × {row['n_genes']} genes, "
            f"{row['n_samples']} samples, {row['n_sensitive']} sensitive / "
            f"{row['n_resistant']} resistant / {row['n_unknown']} unknown "
            f"(gene identifiers: {row['gene_id_type']})"
        )
        if row["shared_cells"]:
            shared = ", ".join(
                f"{s['dataset_id']} {s['n_shared']}"
                + (f" ({s['n_conflicting']} with the opposite label)" if s["n_conflicting"] else "")
                for s in row["shared_cells"]
            )
            click.echo(f"identical cells in other data sets: {shared}")
    for warning in row["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@main.command()
@json_option()
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List data sets: cells, genes, labels, samples and metadata.

    shared_cells names the other data sets holding identical cells (the same genes with
    the same values) and how many, with how many of those carry the opposite label
    ("conflicting"): a data set relabelled and stored twice shows here."""
    from scdrugmap.workflows.catalog import catalog_file, dataset_rows

    names, rows = [], []
    if catalog_file(store_path(ctx)).exists():
        names, rows = dataset_rows(store_path(ctx), all_columns=as_json)
    print_rows(names, rows, as_json, "data sets")


@main.command()
@click.argument("query")
@click.option("--limit", type=int, default=None, help="At most this many rows.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds before the query is stopped.",
)
@json_option()
@click.pass_context
def sql(ctx: click.Context, query: str, limit: int | None, timeout: float, as_json: bool) -> None:
    """Run a read-only SQL QUERY over the catalog.

    Tables: datasets, cells (cells.content_hash: a hash of the cell's genes and
    values, equal for identical cells in any file or gene order), embeddings,
    failures (cells an embedding saw nothing of), splits, runs, results,
    predictions (per-cell held-out probabilities; domain_score and in_domain,
    the cell's applicability domain where one was applied, else NULL),
    predictors, zeroshot_failures; views cell_meta (cells joined
    with their data set's metadata) and shared_cells (per dataset_id and
    other_dataset_id: n_shared, its cells identical to cells of the other;
    n_conflicting, those with a copy of the opposite label). Statements that
    write are refused.

    Calibration: results.metric includes ece (expected calibration error, 10
    equal-width bins of the probability of sensitivity) and brier per fold,
    and for evaluate runs ece_calibrated and brier_calibrated, after a
    calibrator fitted on the fold's training cells only;
    predictions.prob_calibrated is each held-out cell's probability after it
    (NULL where a run calibrated nothing); predictors.calibration is JSON of
    how a predictor is calibrated (method, grouping, ece_raw, ece_calibrated,
    brier_raw, brier_calibrated, reliability bins).

    \b
    Example:
      scdrugmap sql "SELECT dataset_id, label, count(*) FROM cells GROUP BY ALL"
    """
    from scdrugmap.workflows.catalog import sql_rows

    columns, rows = sql_rows(store_path(ctx), query, limit, timeout)
    print_rows(columns, rows, as_json)


@main.command()
@click.option("--embedding", required=True, help="Embedding key.")
@click.option("--dataset", "dataset_id", required=True, help="Data set id.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output .h5ad path.",
)
@click.pass_context
def export(ctx: click.Context, embedding: str, dataset_id: str, out: Path) -> None:
    """Write a data set as .h5ad with the embedding in .obsm["X_<KEY>"].

    obs_names are the cells' barcodes in store order and .obs holds the cell
    metadata (sample, label, counts, vocabulary coverage).
    """
    path = store_from(ctx).export(embedding, dataset_id, out)
    click.echo(f"wrote {path}")

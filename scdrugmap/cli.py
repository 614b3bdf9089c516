"""The `scdrugmap` command: parse, call the library, print.

Heavy libraries (anndata, zarr, scikit-learn, LightGBM, torch) are imported
inside the commands that need them, so `--help`, `sql`, `datasets` and
`results` start in well under a second on a laptop.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from scdrugmap.errors import ScdrugmapError

STORE_HELP = "Store directory (default: $SCDRUGMAP_STORE or ./scdrugmap-store)."


def _store(ctx: click.Context):
    from scdrugmap.workflows.api import Store

    return Store(ctx.obj["store"])


def _csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _print_frame(frame, as_json: bool, title: str | None = None) -> None:
    """A DataFrame as a rich table for people, or JSON records for scripts."""
    if as_json:
        click.echo(frame.to_json(orient="records", date_format="iso", default_handler=str))
        return
    _print_rows(list(frame.columns), list(frame.itertuples(index=False)), False, title)


def _print_rows(columns: list[str], rows: list, as_json: bool, title: str | None = None) -> None:
    """Rows as a rich table or as JSON records; needs neither pandas nor numpy."""
    if as_json:
        records = [dict(zip(columns, row)) for row in rows]
        click.echo(json.dumps(records, default=_json_default))
        return
    if not rows:
        click.echo(f"{title or 'result'}: nothing yet")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(Text(str(column)), overflow="fold")
    for row in rows:
        # Text, not str: a value such as "[optional.pkl]" is data, never rich markup.
        table.add_row(*(Text("" if _is_missing(v) else str(v)) for v in row))
    # Piped output has no terminal width; do not squeeze tables into 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _json_default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _catalog(ctx: click.Context) -> Path:
    from scdrugmap.store.location import CATALOG_NAME, default_store_path

    return (ctx.obj["store"] or default_store_path()) / CATALOG_NAME


def _catalog_rows(ctx: click.Context, query: str, limit: int | None = None):
    """Run a read-only query on the store's catalog by the fast path (no pandas)."""
    from scdrugmap.errors import StoreError
    from scdrugmap.store.sql import query_rows

    catalog = _catalog(ctx)
    path = catalog.parent
    if not catalog.exists():
        raise StoreError(
            f"{path}: no scdrugmap store here; run `scdrugmap --store {path} ingest ...` "
            "first, or point --store / $SCDRUGMAP_STORE at one"
        )
    return query_rows(catalog, query, limit)


def _is_missing(value) -> bool:
    try:
        return value is None or value != value
    except (TypeError, ValueError):
        return False


# click >= 8.2 raises this for a bare `scdrugmap`, to print the help; it stays as it is.
_HELP_FOR_NO_ARGUMENTS = getattr(click.exceptions, "NoArgsIsHelpError", ())


@contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    """A bad choice, a missing or an unknown option: one line and exit code 2, instead of
    click's usage block, so it reads like every other error of the command."""
    try:
        yield
    except _HELP_FOR_NO_ARGUMENTS:
        raise
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "scdrugmap"
        message = error.format_message().rstrip(".")
        click.echo(f"error: {message} (see `{command} --help`)", err=True)
        sys.exit(error.exit_code)


class _Group(click.Group):
    """Turns user-facing errors into one line: the library's with exit code 1, usage
    errors with exit code 2."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _usage_errors_in_one_line():  # the group's own options and arguments
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context):
        try:
            with _usage_errors_in_one_line():  # the command's name, options and arguments
                return super().invoke(ctx)
        except ScdrugmapError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=STORE_HELP,
)
@click.version_option(package_name="scdrugmap")
@click.pass_context
def main(ctx: click.Context, store: Path | None) -> None:
    """Predict drug response (sensitive / resistant) of single cancer cells.

    Ingest scRNA-seq data sets into a store, embed them (baselines or
    single-cell foundation models), then train and evaluate classifiers on the
    stored embeddings with honest, sample-grouped splits. Start with
    `scdrugmap demo`.
    """
    ctx.obj = {"store": store}


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("scdrugmap-demo"),
    show_default=True,
    help="Directory for the demo's data, store and report (rebuilt each time).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated data.")
@click.option(
    "--scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiplies the number of generated cells.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def demo(out: Path, seed: int, scale: float, as_json: bool) -> None:
    """Run the whole pipeline on the built-in generated data set.

    Generates three drug-response data sets, ingests them, embeds them with
    the pca and hvg baselines and, with the model extras installed, as text
    through the bundled all-MiniLM-L6-v2 encoder; evaluates logreg, lightgbm
    and mlp with pooled and cross-dataset splits, prints the results table,
    writes an HTML report to OUT/report/index.html and keeps a predictor
    (pca + logreg) for `scdrugmap serve`.
    """
    from scdrugmap.workflows.demo import run_demo

    outcome = run_demo(out, seed=seed, scale=scale, show_progress=not as_json)
    _print_results(outcome.store, as_json, scope="pooled")
    if not as_json:
        if outcome.skipped:
            click.echo(outcome.skipped)
        click.echo(f"store: {outcome.store.path}")
        click.echo(f"report: {outcome.report}")
        click.echo(
            f"predictor: {outcome.predictor}; see it on the web page with "
            f"`scdrugmap --store {outcome.store.path} serve` and upload "
            f"{outcome.upload_example} (sample column: sample)"
        )
        click.echo(f"took {outcome.seconds:.1f} s")


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
@click.option("--json", "as_json", is_flag=True, help="Print the new data set as JSON.")
@click.pass_context
def ingest(
    ctx,
    files,
    dataset_id,
    samples,
    labels,
    label_column,
    sensitive_values,
    resistant_values,
    sample_column,
    drug,
    cancer_type,
    tissue,
    therapy,
    regimen,
    species,
    meta,
    orientation,
    values,
    replace,
    as_json,
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

    from scdrugmap.data.prepare import IngestOptions, prepare_dataset
    from scdrugmap.errors import InputError

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
        sensitive_values=_csv_list(sensitive_values),
        resistant_values=_csv_list(resistant_values),
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
    prepared = prepare_dataset(files, options, show_progress=not as_json)
    row = _store(ctx).add_prepared(prepared, replace=replace)
    if as_json:
        _print_frame(pd.DataFrame([{**row, "warnings": prepared.warnings}]), True)
    else:
        click.echo(
            f"ingested {row['dataset_id']}: {row['n_cells']} cells × {row['n_genes']} genes, "
            f"{row['n_samples']} samples, {row['n_sensitive']} sensitive / "
            f"{row['n_resistant']} resistant / {row['n_unknown']} unknown "
            f"(gene identifiers: {row['gene_id_type']})"
        )
    for warning in prepared.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_context
def datasets(ctx, as_json: bool) -> None:
    """List data sets: cells, genes, labels, samples and metadata."""
    columns = (
        "*"
        if as_json
        else "dataset_id, n_cells, n_genes, n_samples, n_sensitive, n_resistant, n_unknown, "
        "drug, cancer_type, tissue, therapy, value_type, gene_id_type"
    )
    names, rows = [], []
    if _catalog(ctx).exists():
        names, rows = _catalog_rows(ctx, f"SELECT {columns} FROM datasets ORDER BY dataset_id")
    _print_rows(names, rows, as_json, "data sets")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
def models(as_json: bool) -> None:
    """List the embedders: size, gene identifiers, input length, checkpoint files, readiness.

    A foundation model is ready when its checkpoint directory is configured
    ($SCDRUGMAP_CHECKPOINT_<MODEL>, or a <model> folder under
    $SCDRUGMAP_CHECKPOINTS) and holds the published files; `embed` then needs
    no --checkpoint.
    """
    from scdrugmap.embed.checkpoints import availability
    from scdrugmap.embed.registry import MODELS

    columns = ["model", "embedding", "genes", "max length", "checkpoint files", "status"]
    rows = []
    for spec in MODELS.values():
        if spec.fitted_in_store:
            files, status = "none: fitted in the store", "ready"
        else:
            files, status = ", ".join(spec.checkpoint_files), availability(spec).describe()
        rows.append([spec.name, spec.dim, spec.gene_ids, spec.max_length, files, status])
    if as_json:
        descriptions = {spec.name: (spec.description, spec.source) for spec in MODELS.values()}
        for row in rows:
            row.extend(descriptions[row[0]])
        columns += ["description", "published at"]
    _print_rows(columns, rows, as_json, "models")


_CHECKPOINT_OPTION = click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint directory of a foundation model, in its published layout "
    "(default: the one configured, see `scdrugmap models`).",
)
_DEVICE_OPTION = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N, or auto (CUDA when present). Asking for CUDA never falls back.",
)
_PARAM_OPTION = click.option(
    "--param",
    "params",
    multiple=True,
    help="Model setting KEY=VALUE, e.g. n_components=30 (pca), precision=bfloat16.",
)


def _parse_params(params: tuple[str, ...]) -> dict:
    from scdrugmap.errors import InputError

    parsed = {}
    for item in params:
        if "=" not in item:
            raise InputError(f"--param {item!r}: give KEY=VALUE, e.g. --param n_components=30")
        key, raw = item.split("=", 1)
        try:
            parsed[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.strip()] = raw
    return parsed


@main.command()
@click.option("--model", required=True, help="Embedder name (see `scdrugmap models`).")
@click.option(
    "--datasets",
    "dataset_ids",
    default="all",
    show_default=True,
    help="Comma-separated data set ids, or 'all'.",
)
@click.option("--key", help="Embedding key in the store (default: the model's name).")
@_CHECKPOINT_OPTION
@click.option(
    "--fit-on",
    help="Baselines: data sets to fit on when the key is new "
    "(default: the data sets being embedded).",
)
@click.option(
    "--chunk-size",
    type=int,
    default=10_000,
    show_default=True,
    help="Cells per chunk: the unit of streaming, writing and resuming.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Stored precision.",
)
@_DEVICE_OPTION
@click.option(
    "--min-coverage",
    type=float,
    default=None,
    help="Refuse data sets whose cells have fewer of their expressed genes in the model's "
    "vocabulary (default 0.5 for foundation models; 0 embeds anyway).",
)
@_PARAM_OPTION
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: spread chunks over Ray actors, one per GPU (or CPU worker); needs "
    "`pip install scdrugmap[ray]` and a store path every node reaches.",
)
@click.option(
    "--address", help="Ray cluster to join (e.g. auto, or ray://head:10001); default: a local one."
)
@click.option("--workers", type=int, help="Ray actors (default: one per GPU, else per CPU).")
@click.option("--replace", is_flag=True, help="Delete this key (and its fit) first.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def embed(
    ctx,
    model,
    dataset_ids,
    key,
    checkpoint,
    fit_on,
    chunk_size,
    dtype,
    device,
    min_coverage,
    params,
    executor,
    address,
    workers,
    replace,
    as_json,
) -> None:
    """Embed data sets into the store, chunk by chunk; reruns resume.

    The pca and hvg baselines are fitted once, on --fit-on (or the data sets
    embedded the first time the key is used), and that fit is then applied
    unchanged to every later data set under the same key.
    """
    summary = _store(ctx).embed(
        model,
        dataset_ids,
        key=key,
        checkpoint=checkpoint,
        fit_on=fit_on,
        chunk_size=chunk_size,
        dtype=dtype,
        replace=replace,
        show_progress=not as_json,
        device=device,
        min_coverage=min_coverage,
        executor=executor,
        address=address,
        workers=workers,
        **_parse_params(params),
    )
    record = {
        "key": summary.key,
        "model": summary.model,
        "datasets": summary.datasets,
        "cells_embedded": summary.cells_embedded,
        "chunks_written": summary.chunks_written,
        "chunks_already_done": summary.chunks_resumed,
        "seconds": round(summary.seconds, 3),
        "cells_per_second": round(summary.cells_per_second, 1) if summary.cells_embedded else None,
        "failures": summary.failures,
        "device": summary.device,
    }
    if as_json:
        click.echo(json.dumps(record))
    else:
        rate = f", {summary.cells_per_second:,.0f} cells/s" if summary.cells_embedded else ""
        click.echo(
            f"{summary.key}: embedded {summary.cells_embedded} cells of "
            f"{', '.join(summary.datasets)} in {summary.seconds:.1f} s{rate} on "
            f"{summary.device} ({summary.chunks_resumed} chunks already done)"
        )
        if summary.failures:
            click.echo(
                f"{summary.failures} cells had no expressed gene the model knows; they are "
                f'listed with the reason by `scdrugmap sql "SELECT * FROM failures WHERE key = '
                f"'{summary.key}'\"`"
            )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_context
def embeddings(ctx, as_json: bool) -> None:
    """List stored embeddings with provenance and completeness."""
    frame = _store(ctx).embeddings()
    if not as_json and not frame.empty:
        frame = frame.assign(
            chunks=frame["chunks_done"].astype(str) + "/" + frame["n_chunks"].astype(str),
            weights=frame["weights_sha256"].str[:12],
            coverage=frame["mean_coverage"].round(3),
        )[
            [
                "key",
                "dataset_id",
                "model",
                "dim",
                "dtype",
                "n_cells",
                "chunks",
                "complete",
                "coverage",
                "weights",
                "settings_hash",
            ]
        ]
    _print_frame(frame, as_json, "embeddings")


@main.command()
@click.argument("query")
@click.option("--limit", type=int, default=None, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_context
def sql(ctx, query: str, limit: int | None, as_json: bool) -> None:
    """Run a read-only SQL QUERY over the catalog.

    Tables: datasets, cells, embeddings, failures (cells an embedding saw nothing
    of), splits, runs, results, predictions, predictors, zeroshot_failures;
    view cell_meta (cells joined with their data set's metadata). Statements
    that write are refused.

    \b
    Example:
      scdrugmap sql "SELECT dataset_id, label, count(*) FROM cells GROUP BY ALL"
    """
    columns, rows = _catalog_rows(ctx, query, limit)
    _print_rows(columns, rows, as_json)


_EVAL_OPTIONS = [
    click.option(
        "--where",
        help="SQL condition on cell_meta selecting the cells, e.g. \"drug = 'erlotinib'\" "
        "(default: the data sets that hold the embedding; for finetune, those of raw counts).",
    ),
    click.option(
        "--folds",
        "n_folds",
        type=int,
        default=5,
        show_default=True,
        help="Folds of the pooled split.",
    ),
    click.option(
        "--shots",
        type=int,
        default=5,
        show_default=True,
        help="Labelled target cells per class in the few-shot split.",
    ),
    click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of splits and models."
    ),
    click.option("--json", "as_json", is_flag=True, help="Print JSON."),
]


def _eval_options(command):
    for option in reversed(_EVAL_OPTIONS):
        command = option(command)
    return command


@main.command()
@click.option("--embedding", required=True, help="Embedding key.")
@click.option("--classifier", required=True, help="logreg, lightgbm, mlp or knn.")
@click.option("--split", required=True, help="pooled, cross-dataset or few-shot.")
@_eval_options
@click.pass_context
def evaluate(ctx, embedding, classifier, split, where, n_folds, shots, seed, as_json) -> None:
    """Cross-validate one classifier on one stored embedding.

    Splits never put cells of one sample (pooled) or one data set
    (cross-dataset) on both sides; where a selection has too few samples the
    run falls back to cell-level folds and says so.
    """
    store = _store(ctx)
    record = store.evaluate(
        embedding,
        classifier,
        split,
        where=where,
        n_folds=n_folds,
        shots=shots,
        seed=seed,
        show_progress=not as_json,
    )
    _report_run(record, as_json)


def _report_run(record, as_json: bool) -> None:
    from scdrugmap.report.tables import results_table

    frame = record.results.assign(
        embedding=record.embedding, classifier=record.classifier, split=record.split
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run_id": record.run_id,
                    "n_cells": record.n_cells,
                    "cell_level": record.cell_level,
                    "note": record.note,
                    "selection_message": record.selection_message,
                    "seconds": round(record.seconds, 3),
                    "results": json.loads(frame.to_json(orient="records")),
                }
            )
        )
        return
    if record.selection_message:
        click.echo(record.selection_message)
    if record.note:
        click.echo(f"note: {record.note}")
    _print_frame(results_table(frame), False, f"{record.run_id} ({record.n_cells} cells)")


@main.command()
@click.option("--embedding", required=True, help="Embedding key.")
@click.option("--classifier", required=True, help="logreg, lightgbm, mlp or knn.")
@click.option("--name", required=True, help="Name the predictor is kept under.")
@click.option(
    "--where",
    help="SQL condition on cell_meta selecting the training cells (default: the data sets "
    "that hold the embedding).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--replace", is_flag=True, help="Overwrite a predictor of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print the predictor's record as JSON.")
@click.pass_context
def train(ctx, embedding, classifier, name, where, seed, replace, as_json) -> None:
    """Fit a classifier on all selected cells and keep it in the store as a predictor.

    It is saved without pickle (arrays, LightGBM's text model, safetensors)
    beside its provenance: the embedding and its model, weights and settings,
    the cells used, and the metrics of the matching cross-validated run.
    """
    record = _store(ctx).train_predictor(
        embedding, classifier, name, where=where, seed=seed, replace=replace
    )
    if as_json:
        click.echo(json.dumps(record, default=str))
        return
    for line in filter(None, [record["selection_message"], *record["left_out"]]):
        click.echo(line)
    checked = record["cross_validated"]
    measured = (
        ", ".join(f"{k} {v:.3f}" for k, v in checked["metrics"].items() if k in _HEADLINE)
        if checked
        else "no cross-validated run of this embedding and classifier yet"
    )
    click.echo(
        f"predictor {name!r}: {classifier} on {embedding}, {record['n_cells']} cells ({measured})"
    )


_HEADLINE = ("f1_sensitive", "auroc", "balanced_accuracy")


@main.command()
@click.option("--predictor", required=True, help="A predictor kept by `scdrugmap train`.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Write the calls: .csv or .h5ad.")
@click.option("--dataset", "dataset_id", help="Id of the new data set (default: a dated one).")
@click.option("--sample", "samples", multiple=True, help="Sample name per file, in file order.")
@click.option("--sample-column", help="Per-cell column holding sample names (h5ad obs, table).")
@_CHECKPOINT_OPTION
@_DEVICE_OPTION
@_PARAM_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the per-sample summary as JSON.")
@click.pass_context
def predict(
    ctx,
    predictor,
    files,
    out,
    dataset_id,
    samples,
    sample_column,
    checkpoint,
    device,
    params,
    as_json,
) -> None:
    """Predict drug response for the cells in FILES with a kept predictor.

    The cells are ingested (no labels needed; the same checks as `ingest`),
    embedded exactly as the predictor's embedding was (its recorded checkpoint
    directory and --param values, unless you give them), and classified; each
    cell gets its probability of sensitivity and a call, each sample a
    summary. A file that fails leaves the store unchanged.
    """
    from scdrugmap.predict.predict import NO_CALL, write_predictions

    store = _store(ctx)
    result = store.predict(
        predictor,
        files,
        dataset_id=dataset_id,
        samples=list(samples),
        sample_column=sample_column,
        checkpoint=checkpoint,
        device=device,
        options=_parse_params(params),
        show_progress=not as_json,
    )
    written = write_predictions(store, result, out) if out else []
    if as_json:
        summary = json.loads(result.samples.to_json(orient="records"))
        click.echo(
            json.dumps(
                {
                    "dataset_id": result.dataset_id,
                    "gene_coverage": result.gene_coverage,
                    "coverage_basis": result.coverage_basis,
                    "samples": summary,
                }
            )
        )
        return
    click.echo(f"gene coverage: {result.gene_coverage:.0%} ({result.coverage_basis})")
    no_call = result.cells.loc[result.cells["call"] == NO_CALL, "no_call_reason"]
    for reason, n_cells in no_call.value_counts().items():
        click.echo(f"no call for {n_cells} cells: {reason}")
    _print_frame(result.samples, False, f"{result.dataset_id}: {len(result.cells)} cells")
    for path in written:
        click.echo(f"wrote {path}")


@main.command()
@click.option("--model", required=True, help="Foundation model (see `scdrugmap models`).")
@_CHECKPOINT_OPTION
@click.option("--split", required=True, help="pooled, cross-dataset or few-shot.")
@_eval_options
@click.option("--lora-r", type=int, default=8, show_default=True, help="LoRA rank.")
@click.option("--lora-alpha", type=float, default=8, show_default=True, help="LoRA alpha.")
@click.option(
    "--lora-dropout", type=float, default=0.05, show_default=True, help="Dropout on adapters."
)
@click.option(
    "--lora-targets",
    default="",
    help="Comma-separated module names to adapt (default: the model's published targets, "
    "e.g. query,key,value for Geneformer, out_proj for scGPT).",
)
@click.option("--epochs", type=int, default=3, show_default=True, help="At most this many.")
@click.option(
    "--embed-as",
    help="Also re-embed the selected data sets with each fold's adapter as KEY.fold<k>; "
    "evaluating those never scores the cells an adapter trained on.",
)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="AdamW learning rate.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Cells per step.")
@click.option(
    "--accumulate", type=int, default=1, show_default=True, help="Batches per optimiser step."
)
@click.option(
    "--patience",
    type=int,
    default=2,
    show_default=True,
    help="Epochs without a better validation loss before stopping.",
)
@_DEVICE_OPTION
@_PARAM_OPTION
@click.pass_context
def finetune(
    ctx,
    model,
    checkpoint,
    split,
    where,
    n_folds,
    shots,
    seed,
    as_json,
    lora_r,
    lora_alpha,
    lora_dropout,
    lora_targets,
    epochs,
    embed_as,
    lr,
    batch_size,
    accumulate,
    patience,
    device,
    params,
) -> None:
    """Fine-tune a foundation model with LoRA adapters and an MLP head, per fold.

    Each fold trains on its training cells only (early stopping on validation
    cells carved from them) and scores its held-out cells; the metrics land
    in `results` as classifier lora-mlp, beside frozen-embedding runs. Each
    fold's adapter, head and trained cells are kept in the store; the same
    command rerun after a crash resumes where it stopped.
    """
    from scdrugmap.finetune.lora import LoraSettings
    from scdrugmap.finetune.run import FinetuneRequest
    from scdrugmap.finetune.train import TrainSettings

    targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip())
    request = FinetuneRequest(
        model=model,
        split=split,
        checkpoint=checkpoint,
        where=where,
        n_folds=n_folds,
        shots=shots,
        lora=LoraSettings(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, targets=targets),
        train=TrainSettings(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            accumulate=accumulate,
            patience=patience,
            seed=seed,
        ),
        device=device,
        options=_parse_params(params),
        embed_as=embed_as,
    )
    _report_run(_store(ctx).finetune(request, show_progress=not as_json), as_json)


@main.command()
@click.option(
    "--embeddings", "embedding_keys", required=True, help="Comma-separated embedding keys."
)
@click.option("--classifiers", required=True, help="Comma-separated classifiers.")
@click.option("--splits", required=True, help="Comma-separated splits.")
@_eval_options
@click.pass_context
def benchmark(
    ctx, embedding_keys, classifiers, splits, where, n_folds, shots, seed, as_json
) -> None:
    """Evaluate every embedding × classifier × split and print the results table.

    A combination that cannot run (say, cross-dataset with one data set) is
    reported and skipped; the exit code is then 1.
    """
    store = _store(ctx)
    failures = []
    told = set()
    for embedding_key in _csv_list(embedding_keys):
        for classifier in _csv_list(classifiers):
            for split in _csv_list(splits):
                try:
                    record = store.evaluate(
                        embedding_key,
                        classifier,
                        split,
                        where=where,
                        n_folds=n_folds,
                        shots=shots,
                        seed=seed,
                        show_progress=not as_json,
                    )
                except ScdrugmapError as error:
                    failures.append(f"{embedding_key} × {classifier} × {split}: {error}")
                    continue
                if as_json:
                    continue
                if record.selection_message and embedding_key not in told:
                    told.add(embedding_key)
                    click.echo(record.selection_message)
                if record.note:
                    click.echo(f"note ({embedding_key} × {classifier} × {split}): {record.note}")
    _print_results(store, as_json, scope="pooled")
    for failure in failures:
        click.echo(f"skipped: {failure}", err=True)
    if failures:
        sys.exit(1)


def _print_results(store, as_json: bool, scope: str) -> None:
    from scdrugmap.report.tables import results_table, summarise

    results = store.results()
    if as_json:
        frame = summarise(results, scope=scope) if not results.empty else results
        _print_frame(frame, True)
        return
    _print_frame(
        results_table(results) if not results.empty else results,
        False,
        "results: mean ± s.e.m. over folds (all test cells of each fold)",
    )


@main.command()
@click.option(
    "--scope",
    type=click.Choice(["pooled", "dataset"]),
    default="pooled",
    show_default=True,
    help="pooled: all test cells of a fold; dataset: per data set.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON records (summary per row).")
@click.pass_context
def results(ctx, scope: str, as_json: bool) -> None:
    """The results table: mean ± s.e.m. per (embedding, classifier, split).

    Only the latest run of each combination (and selection) is shown.
    """
    store = _store(ctx)
    frame = store.results()
    if scope == "pooled" or frame.empty:
        _print_results(store, as_json, scope)
        return
    from scdrugmap.report.tables import summarise

    _print_frame(summarise(frame, scope="dataset").round(3), as_json, "results per data set")


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
def export(ctx, embedding: str, dataset_id: str, out: Path) -> None:
    """Write a data set as .h5ad with the embedding in .obsm["X_<KEY>"].

    obs_names are the cells' barcodes in store order and .obs holds the cell
    metadata (sample, label, counts, vocabulary coverage).
    """
    path = _store(ctx).export(embedding, dataset_id, out)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--token",
    envvar="SCDRUGMAP_TOKEN",
    help="Secret every request must carry ($SCDRUGMAP_TOKEN); required off 127.0.0.1.",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=2048,
    show_default=True,
    help="Largest file a user may upload.",
)
@click.option(
    "--sql-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Most rows one SQL request returns.",
)
@click.option(
    "--sql-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Time limit of one SQL request.",
)
@_DEVICE_OPTION
@click.pass_context
def serve(ctx, host, port, token, max_upload_mb, sql_rows, sql_seconds, device) -> None:
    """Serve the store over HTTP: a web page and an API (OpenAPI at /api/openapi.json).

    A user uploads cells (h5ad, 10x .h5 or a table), picks a predictor kept by
    `scdrugmap train` and watches per-cell calls, a map of the cells and
    per-sample histograms appear. The API also lists data sets, embeddings,
    predictors, runs and results, and answers read-only SQL.

    Binds 127.0.0.1 by default. Any other address needs --token; the page is
    then opened as http://HOST:PORT/?token=TOKEN and API clients send
    'Authorization: Bearer TOKEN'.
    """
    from scdrugmap.serve.app import serve as run_server
    from scdrugmap.serve.settings import ServeSettings

    settings = ServeSettings(
        host=host,
        port=port,
        token=token or None,
        max_upload_bytes=int(max_upload_mb * 1024**2),
        sql_max_rows=sql_rows,
        sql_seconds=sql_seconds,
        device=device,
    ).check()
    store = _store(ctx)
    shown = f"[{host}]" if ":" in host else host
    suffix = "/?token=<token>" if token else "/"
    click.echo(f"scdrugmap: serving {store.path} at http://{shown}:{port}{suffix} (Ctrl-C stops)")
    if not store.exists():
        click.echo(
            f"note: {store.path} holds no store yet; `ingest`, `embed` and `train` a predictor "
            "for the page to use (or pass --store)"
        )
    run_server(store, settings)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report directory (default: <store>/report).",
)
@click.pass_context
def report(ctx, out: Path | None) -> None:
    """Write an HTML report with figures of the latest results."""
    store = _store(ctx)
    path = store.report(out or store.path / "report")
    click.echo(f"wrote {path}")


@main.command()
@click.option(
    "--where",
    help="SQL condition on cell_meta selecting the cells, e.g. \"drug = 'erlotinib'\".",
)
@click.option(
    "--datasets",
    "dataset_ids",
    default="all",
    show_default=True,
    help="Comma-separated data set ids, or 'all'.",
)
@click.option(
    "--url",
    envvar="SCDRUGMAP_CHAT_URL",
    show_envvar=True,
    required=True,
    help="OpenAI-compatible API base (https://host/v1) or its /chat/completions endpoint.",
)
@click.option(
    "--model", envvar="SCDRUGMAP_CHAT_MODEL", show_envvar=True, required=True, help="Chat model."
)
@click.option(
    "--api-key",
    envvar=["SCDRUGMAP_CHAT_API_KEY", "OPENAI_API_KEY"],
    help="Bearer key (default: $SCDRUGMAP_CHAT_API_KEY, then $OPENAI_API_KEY; prefer "
    "the environment, which other users cannot see). Never stored.",
)
@click.option("--batch-size", type=int, default=20, show_default=True, help="Cells per request.")
@click.option(
    "--top-genes",
    type=int,
    default=50,
    show_default=True,
    help="Genes per cell in the prompt: the most expressed, by raw counts.",
)
@click.option(
    "--retries",
    type=int,
    default=2,
    show_default=True,
    help="Re-asks of cells whose answer was malformed or missing.",
)
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds per HTTP request."
)
@click.option("--max-cells", type=int, default=None, help="Random subset of this many cells.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the subset and batch order."
)
@click.option(
    "--include-unlabelled",
    is_flag=True,
    help="Also classify cells labelled unknown (predictions only; metrics use labelled cells).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def zeroshot(
    ctx,
    where,
    dataset_ids,
    url,
    model,
    api_key,
    batch_size,
    top_genes,
    retries,
    timeout,
    max_cells,
    seed,
    include_unlabelled,
    as_json,
) -> None:
    """Ask a chat model for each cell's response, zero-shot, as the scDrugMap benchmark did.

    Each cell is sent as its top expressed genes, in batches of one data set,
    with the data set's drug and cancer type. Answers must be strict JSON;
    malformed answers are re-asked up to --retries times, and cells still
    unanswered are recorded in the table zeroshot_failures (the run's note
    counts them). Results and predictions go to the usual tables.

    \b
    Example:
      export SCDRUGMAP_CHAT_API_KEY=...
      scdrugmap zeroshot --url https://api.openai.com/v1 --model gpt-4o-mini \\
        --where "drug = 'erlotinib'" --max-cells 500
    """
    from scdrugmap.zeroshot.client import ChatClient
    from scdrugmap.zeroshot.run import ZeroShotSettings, run_zeroshot

    client = ChatClient(url, model, api_key, timeout=timeout)
    settings = ZeroShotSettings(
        batch_size=batch_size,
        top_genes=top_genes,
        retries=retries,
        max_cells=max_cells,
        seed=seed,
        include_unlabelled=include_unlabelled,
    )
    record = run_zeroshot(
        _store(ctx),
        client,
        where=where,
        datasets=dataset_ids,
        settings=settings,
        show_progress=not as_json,
    )
    _report_run(record, as_json)


if __name__ == "__main__":
    main()

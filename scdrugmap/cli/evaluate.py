"""Evaluation commands: evaluate, benchmark, results."""

from __future__ import annotations

import sys

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import csv_list, eval_options, store_from
from scdrugmap.cli.output import print_frame, print_results, report_run
from scdrugmap.errors import ScdrugmapError


@main.command()
@click.option("--embedding", required=True, help="Embedding key.")
@click.option("--classifier", required=True, help="logreg, lightgbm, mlp or knn.")
@click.option("--split", required=True, help="pooled, cross-dataset or few-shot.")
@eval_options
@click.pass_context
def evaluate(ctx, embedding, classifier, split, where, n_folds, shots, seed, as_json) -> None:
    """Cross-validate one classifier on one stored embedding.

    Splits never put cells of one sample (pooled) or one data set
    (cross-dataset) on both sides; where a selection has too few samples the
    run falls back to cell-level folds and says so.
    """
    store = store_from(ctx)
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
    report_run(record, as_json)


@main.command()
@click.option(
    "--embeddings", "embedding_keys", required=True, help="Comma-separated embedding keys."
)
@click.option("--classifiers", required=True, help="Comma-separated classifiers.")
@click.option("--splits", required=True, help="Comma-separated splits.")
@eval_options
@click.pass_context
def benchmark(
    ctx, embedding_keys, classifiers, splits, where, n_folds, shots, seed, as_json
) -> None:
    """Evaluate every embedding × classifier × split and print the results table.

    A combination that cannot run (say, cross-dataset with one data set) is
    reported and skipped; the exit code is then 1.
    """
    store = store_from(ctx)
    failures = []
    told = set()
    for embedding_key in csv_list(embedding_keys):
        for classifier in csv_list(classifiers):
            for split in csv_list(splits):
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
    print_results(store, as_json, scope="pooled")
    for failure in failures:
        click.echo(f"skipped: {failure}", err=True)
    if failures:
        sys.exit(1)


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
    store = store_from(ctx)
    frame = store.results()
    if scope == "pooled" or frame.empty:
        print_results(store, as_json, scope)
        return
    from scdrugmap.report.tables import summarise

    print_frame(summarise(frame, scope="dataset").round(3), as_json, "results per data set")

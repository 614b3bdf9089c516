"""Evaluation commands: evaluate, benchmark, results."""

from __future__ import annotations

import sys

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import (
    CONTROL_OPTION,
    csv_list,
    eval_options,
    json_option,
    store_from,
    store_path,
)
from scdrugmap.cli.output import print_frame, print_results, report_run


@main.command()
@click.option("--embedding", required=True, help="Embedding key.")
@click.option("--classifier", required=True, help="logreg, lightgbm, mlp or knn.")
@click.option("--split", required=True, help="pooled, cross-dataset or few-shot.")
@eval_options
@CONTROL_OPTION
@click.pass_context
def evaluate(
    ctx: click.Context,
    embedding: str,
    classifier: str,
    split: str,
    where: str | None,
    n_folds: int,
    shots: int,
    seed: int,
    as_json: bool,
    control: str | None,
) -> None:
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
        control=control,
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
@CONTROL_OPTION
@click.option(
    "--fit-within-folds",
    is_flag=True,
    help="Refit baseline embeddings (pca, hvg) on each fold's training data sets, so a "
    "held-out data set is unseen by the fit too; kept as '<key> (fit within folds)'.",
)
@click.pass_context
def benchmark(
    ctx: click.Context,
    embedding_keys: str,
    classifiers: str,
    splits: str,
    where: str | None,
    n_folds: int,
    shots: int,
    seed: int,
    as_json: bool,
    control: str | None,
    fit_within_folds: bool,
) -> None:
    """Evaluate every embedding × classifier × split and print the results table.

    A combination that cannot run (say, cross-dataset with one data set) is
    reported and skipped; the exit code is then 1. With --control shuffled each
    combination also runs on shuffled labels, its chance level.
    """
    from scdrugmap.workflows.benchmark import benchmark as run_benchmark

    store = store_from(ctx)
    steps = run_benchmark(
        store,
        csv_list(embedding_keys),
        csv_list(classifiers),
        csv_list(splits),
        where=where,
        n_folds=n_folds,
        shots=shots,
        seed=seed,
        control=control,
        fit_within_folds=fit_within_folds,
        show_progress=not as_json,
    )
    failures = []
    told = set()
    # Each step's messages as soon as it is done, so a long benchmark reports as it goes.
    for step in steps:
        if step.record is None:
            failures.append(f"{step.name}: {step.error}")
            continue
        if as_json:
            continue
        if step.record.selection_message and step.embedding not in told:
            told.add(step.embedding)
            click.echo(step.record.selection_message)
        if step.record.note:
            click.echo(f"note ({step.name}): {step.record.note}")
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
@json_option("Print JSON records (summary per row).")
@click.pass_context
def results(ctx: click.Context, scope: str, as_json: bool) -> None:
    """The results table: mean ± s.e.m. per (embedding, classifier, split).

    Only the latest run of each combination (selection, control) is shown. `grouping`
    says what the folds held out whole (sample, dataset, or cell: optimistic, cells of
    one sample on both sides); f1_chance is the F1 of calling every cell sensitive, and a
    shuffled control's row sits next to its real run's.
    """
    from scdrugmap.workflows.results import open_results, summarise

    # Not store_from: reading results needs neither torch nor scikit-learn.
    store = open_results(store_path(ctx))
    frame = store.results()
    if scope == "pooled" or frame.empty:
        print_results(store, as_json, scope)
        return
    print_frame(summarise(frame, scope="dataset").round(3), as_json, "results per data set")

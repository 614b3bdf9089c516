"""Predictor commands: train one, predict new cells with it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import (
    CHECKPOINT_OPTION,
    DEVICE_OPTION,
    PARAM_OPTION,
    json_option,
    parse_params,
    store_from,
)
from scdrugmap.cli.output import print_frame

# The metrics `train` quotes from the matching cross-validated run, to keep its line short.
_HEADLINE = ("auroc", "mcc", "f1_sensitive", "f1_chance")


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
@json_option("Print the predictor's record as JSON.")
@click.pass_context
def train(
    ctx: click.Context,
    embedding: str,
    classifier: str,
    name: str,
    where: str | None,
    seed: int,
    replace: bool,
    as_json: bool,
) -> None:
    """Fit a classifier on all selected cells and keep it in the store as a predictor.

    It is saved without pickle (arrays, LightGBM's text model, safetensors)
    beside its provenance: the embedding and its model, weights and settings,
    the cells used, and the metrics of the matching cross-validated run.
    """
    record = store_from(ctx).train_predictor(
        embedding, classifier, name, where=where, seed=seed, replace=replace
    )
    if as_json:
        click.echo(json.dumps(record, default=str))
        return
    for line in filter(None, [record["selection_message"], *record["left_out"]]):
        click.echo(line)
    checked = record["cross_validated"]
    measured = (
        ", ".join(f"{k} {checked['metrics'][k]:.3f}" for k in _HEADLINE if k in checked["metrics"])
        + (f"; held out by {checked['grouping']}" if checked.get("grouping") else "")
        + (" (optimistic)" if checked.get("optimistic") else "")
        if checked
        else "no cross-validated run of this embedding and classifier yet"
    )
    click.echo(
        f"predictor {name!r}: {classifier} on {embedding}, {record['n_cells']} cells ({measured})"
    )


@main.command()
@click.option("--predictor", required=True, help="A predictor kept by `scdrugmap train`.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Write the calls: .csv or .h5ad.")
@click.option("--dataset", "dataset_id", help="Id of the new data set (default: a dated one).")
@click.option("--sample", "samples", multiple=True, help="Sample name per file, in file order.")
@click.option("--sample-column", help="Per-cell column holding sample names (h5ad obs, table).")
@CHECKPOINT_OPTION
@DEVICE_OPTION
@PARAM_OPTION
@json_option("Print the per-sample summary as JSON.")
@click.pass_context
def predict(
    ctx: click.Context,
    predictor: str,
    files: tuple[Path, ...],
    out: Path | None,
    dataset_id: str | None,
    samples: tuple[str, ...],
    sample_column: str | None,
    checkpoint: Path | None,
    device: str,
    params: tuple[str, ...],
    as_json: bool,
) -> None:
    """Predict drug response for the cells in FILES with a kept predictor.

    The cells are ingested (no labels needed; the same checks as `ingest`),
    embedded exactly as the predictor's embedding was (its recorded checkpoint
    directory and --param values, unless you give them), and classified; each
    cell gets its probability of sensitivity and a call, each sample a
    summary. A file that fails leaves the store unchanged.
    """
    from scdrugmap.workflows.predict import NO_CALL, write_predictions

    store = store_from(ctx)
    result = store.predict(
        predictor,
        files,
        dataset_id=dataset_id,
        samples=list(samples),
        sample_column=sample_column,
        checkpoint=checkpoint,
        device=device,
        options=parse_params(params),
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
    print_frame(result.samples, False, f"{result.dataset_id}: {len(result.cells)} cells")
    for path in written:
        click.echo(f"wrote {path}")

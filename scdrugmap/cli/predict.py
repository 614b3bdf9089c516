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
@click.option(
    "--domain-quantile",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.99,
    show_default=True,
    help="Applicability domain: a new cell is in it when it is no farther from the "
    "training cells (mean distance to its 10 nearest) than this share of the training "
    "cells are from the others. Kept with the predictor, so every prediction with it "
    "(command line, API, page) draws the same line.",
)
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
    domain_quantile: float,
    as_json: bool,
) -> None:
    """Fit a classifier on all selected cells and keep it in the store as a predictor.

    It is saved without pickle (arrays, LightGBM's text model, safetensors)
    beside its provenance: the embedding and its model, weights and settings,
    the cells used, and the metrics of the matching cross-validated run.

    Its probabilities are calibrated: Platt scaling or isotonic regression,
    whichever has the lower Brier score in 5-fold cross-validation on the
    training cells (folds hold out whole samples where each label has at least
    two, else they are stratified folds of cells; the record says which),
    fitted on the training cells' out-of-fold probabilities and saved as JSON.

    It also keeps its applicability domain as plain arrays: the training cells'
    embedding (standardised, on its first 32 principal axes; at most 50,000
    cells) and each one's mean distance to its 10 nearest others, against
    which `predict` scores new cells (see --domain-quantile).
    """
    record = store_from(ctx).train_predictor(
        embedding,
        classifier,
        name,
        where=where,
        seed=seed,
        replace=replace,
        domain_quantile=domain_quantile,
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
    click.echo(_calibration_line(record["calibration"]))
    domain = record["domain"]
    click.echo(
        f"domain: {domain['n_reference']} reference cells, {domain['k']} neighbours, "
        f"quantile {domain['quantile']}"
    )


def _calibration_line(calibration: dict) -> str:
    if not calibration.get("method"):
        return f"probabilities not calibrated: {calibration.get('note')}"
    return (
        f"calibrated by {calibration['method']} ({calibration['n_folds']}-fold CV on the "
        f"training cells, held out by {calibration['grouping']}): out-of-fold ECE "
        f"{calibration['ece_raw']:.3f} -> {calibration['ece_calibrated']:.3f}, Brier "
        f"{calibration['brier_raw']:.3f} -> {calibration['brier_calibrated']:.3f}"
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
    cell gets its probability of sensitivity (prob_sensitive, calibrated;
    prob_sensitive_raw, the classifier's own) and a call from the calibrated
    one, each sample a summary: the share of its cells called sensitive with a
    95 % Wilson interval (fraction_low, fraction_high), and its call: sensitive
    or resistant when that interval lies wholly above or below 0.5, uncertain
    when it holds 0.5. Each cell also gets domain_score, the percentile of its
    distance to the predictor's training cells among their own distances, and
    in_domain (below the predictor's --domain-quantile); a sample with under
    half its called cells in the domain (fraction_in_domain) has domain_note
    "outside the predictor's domain": its call extrapolates and is not to be
    trusted. With --out x.csv the samples go to x.samples.csv; an
    .h5ad keeps them in uns["per_sample"]. A file that fails leaves the store
    unchanged.
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
                    "domain_quantile": result.domain_quantile,
                    "samples": summary,
                }
            )
        )
        return
    click.echo(f"gene coverage: {result.gene_coverage:.0%} ({result.coverage_basis})")
    no_call = result.cells.loc[result.cells["call"] == NO_CALL, "no_call_reason"]
    for reason, n_cells in no_call.value_counts().items():
        click.echo(f"no call for {n_cells} cells: {reason}")
    print_frame(result.samples.round(3), False, f"{result.dataset_id}: {len(result.cells)} cells")
    click.echo(
        "call: sensitive or resistant when the 95 % interval of fraction_sensitive "
        "(fraction_low..fraction_high) lies above or below 0.5, uncertain when it holds 0.5"
    )
    _domain_lines(result)
    for path in written:
        click.echo(f"wrote {path}")


def _domain_lines(result) -> None:
    if result.domain_quantile is None:
        click.echo(f"predictor {result.predictor!r} keeps no domain index; train it again")
        return
    for sample in result.samples.itertuples():
        if sample.domain_note:
            click.echo(
                f"sample {sample.sample}: {sample.domain_note} (only "
                f"{sample.fraction_in_domain:.0%} of its called cells are in it); its call "
                "extrapolates from cells unlike the training cells"
            )

"""`scdrugmap demo`: the whole pipeline on the built-in generated data."""

from __future__ import annotations

from pathlib import Path

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import json_option
from scdrugmap.cli.output import print_results


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
@json_option("Print the results as JSON.")
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
    print_results(outcome.store, as_json, scope="pooled")
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

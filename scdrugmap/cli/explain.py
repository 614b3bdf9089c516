"""`scdrugmap explain`: the genes that set a predictor's resistant calls apart from its
sensitive ones in a data set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import DEVICE_OPTION, json_option, store_from
from scdrugmap.cli.output import print_frame

_SHOWN = ("gene", "score", "logfoldchange", "pval_adj", "pct_resistant", "pct_sensitive")


def _readable(rows):
    """Scores and fold changes to two places, p-values in powers of ten (most are far
    below 0.0001), shares to three."""
    shown = rows.loc[:, list(_SHOWN)].round({"score": 2, "logfoldchange": 2})
    shown["pval_adj"] = shown["pval_adj"].map("{:.2e}".format)
    return shown.round({"pct_resistant": 3, "pct_sensitive": 3})


@main.command()
@click.option("--predictor", required=True, help="A predictor kept by `scdrugmap train`.")
@click.option(
    "--dataset", "dataset_id", required=True, help="The data set whose cells are explained."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Gene table to write (.csv): gene, group, score, logfoldchange, pval, pval_adj, "
    "pct_resistant, pct_sensitive; both groups' rows, each by descending score.",
)
@click.option(
    "--figure",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Volcano plot (.png, with an .svg beside it; default: OUT's name + .volcano.png).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Genes shown each way in the output.",
)
@click.option(
    "--memory-mb",
    type=float,
    default=1024,
    show_default=True,
    help="Memory the ranking may hold; less means more passes over the stored counts, "
    "never a different result.",
)
@DEVICE_OPTION
@json_option("Print the summary and the top genes each way as JSON.")
@click.pass_context
def explain(
    ctx: click.Context,
    predictor: str,
    dataset_id: str,
    out: Path,
    figure: Path | None,
    top: int,
    memory_mb: float,
    device: str,
    as_json: bool,
) -> None:
    """Rank genes between the cells PREDICTOR calls resistant and those it calls sensitive.

    The calls are the predictor's on the data set's stored embedding (made first, by the
    embedder as the predictor was fitted, if the store holds none); cells with no call are
    left out. Each gene gets scanpy's Wilcoxon rank-sum test on log1p counts per 10,000
    (tie-corrected z-score, two-sided p-value, Benjamini-Hochberg adjusted p-value), the
    log2 fold change of the group means and the share of each group's cells expressing it,
    streamed over the stored counts within --memory-mb.
    """
    from scdrugmap.workflows.explain import GROUPS, explain, write_explanation

    result = explain(
        store_from(ctx),
        predictor,
        dataset_id,
        memory_mb=memory_mb,
        device=device,
        show_progress=not as_json,
    )
    written = write_explanation(result, out, figure)
    if as_json:
        tops = {g: json.loads(result.top(g, top).to_json(orient="records")) for g in GROUPS}
        files = [str(p) for p in written]
        click.echo(json.dumps({**result.summary(), "files": files, "top": tops}))
        return
    sizes = result.group_sizes
    click.echo(
        f"{dataset_id}: {sizes['resistant']} cells called resistant, {sizes['sensitive']} "
        f"sensitive, {result.n_no_call} with no call left out (calls from {result.calls_from})"
    )
    for group in GROUPS:
        print_frame(_readable(result.top(group, top)), False, f"genes most up in {group} cells")
    for path in written:
        click.echo(f"wrote {path}")

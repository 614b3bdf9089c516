"""`scdrugmap zeroshot`: a chat model classifies cells, zero-shot."""

from __future__ import annotations

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import json_option, store_from
from scdrugmap.cli.output import report_run


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
@json_option("Print JSON.")
@click.pass_context
def zeroshot(
    ctx: click.Context,
    where: str | None,
    dataset_ids: str,
    url: str,
    model: str,
    api_key: str | None,
    batch_size: int,
    top_genes: int,
    retries: int,
    timeout: float,
    max_cells: int | None,
    seed: int,
    include_unlabelled: bool,
    as_json: bool,
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
    from scdrugmap.workflows.zeroshot import ZeroShotSettings
    from scdrugmap.workflows.zeroshot import zeroshot as run_zeroshot

    settings = ZeroShotSettings(
        batch_size=batch_size,
        top_genes=top_genes,
        retries=retries,
        max_cells=max_cells,
        seed=seed,
        include_unlabelled=include_unlabelled,
    )
    record = run_zeroshot(
        store_from(ctx),
        url=url,
        model=model,
        api_key=api_key,
        timeout=timeout,
        where=where,
        datasets=dataset_ids,
        settings=settings,
        show_progress=not as_json,
    )
    report_run(record, as_json)

"""`scdrugmap finetune`: LoRA fine-tuning per fold."""

from __future__ import annotations

from pathlib import Path

import click

from scdrugmap.cli.group import main
from scdrugmap.cli.options import (
    CHECKPOINT_OPTION,
    DEVICE_OPTION,
    PARAM_OPTION,
    eval_options,
    parse_params,
    store_from,
)
from scdrugmap.cli.output import report_run


@main.command()
@click.option("--model", required=True, help="Foundation model (see `scdrugmap models`).")
@CHECKPOINT_OPTION
@click.option("--split", required=True, help="pooled, cross-dataset or few-shot.")
@eval_options
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
@DEVICE_OPTION
@PARAM_OPTION
@click.pass_context
def finetune(
    ctx: click.Context,
    model: str,
    checkpoint: Path | None,
    split: str,
    where: str | None,
    n_folds: int,
    shots: int,
    seed: int,
    as_json: bool,
    lora_r: int,
    lora_alpha: float,
    lora_dropout: float,
    lora_targets: str,
    epochs: int,
    embed_as: str | None,
    lr: float,
    batch_size: int,
    accumulate: int,
    patience: int,
    device: str,
    params: tuple[str, ...],
) -> None:
    """Fine-tune a foundation model with LoRA adapters and an MLP head, per fold.

    Each fold trains on its training cells only (early stopping on validation
    cells carved from them) and scores its held-out cells; the metrics land
    in `results` as classifier lora-mlp, beside frozen-embedding runs. Each
    fold's adapter, head and trained cells are kept in the store; the same
    command rerun after a crash resumes where it stopped.
    """
    from scdrugmap.workflows.finetune import FinetuneRequest, LoraSettings, TrainSettings

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
        options=parse_params(params),
        embed_as=embed_as,
    )
    report_run(store_from(ctx).finetune(request, show_progress=not as_json), as_json)

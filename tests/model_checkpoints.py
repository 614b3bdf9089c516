"""Every foundation model as a small random checkpoint in its published layout, by name,
with the load options its small shape needs: for tests that run all models alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.checkpoints import bundled_checkpoint
from tests.celllm_checkpoint import write_celllm_checkpoint
from tests.cellplm_checkpoint import write_cellplm_checkpoint
from tests.data_files import top_expressed_genes
from tests.geneformer_checkpoint import write_geneformer_checkpoint
from tests.performer_checkpoint import SHAPE as PERFORMER_SHAPE
from tests.scbert_checkpoint import write_scbert_checkpoint
from tests.scfoundation_checkpoint import write_scfoundation_checkpoint
from tests.scgpt_checkpoint import write_scgpt_checkpoint
from tests.tgpt_checkpoint import write_tgpt_checkpoint
from tests.uce_checkpoint import write_uce_checkpoint

Builder = Callable[[Path, Path, SourceTable], tuple[Path, dict]]


def _vocab(real_data: Path, name: str) -> Path:
    return real_data / "vocab" / name


SMALL_CHECKPOINTS: dict[str, Builder] = {
    "geneformer": lambda folder, real_data, cells: (
        write_geneformer_checkpoint(folder, _vocab(real_data, "geneformer_v1")),
        {},
    ),
    "scgpt": lambda folder, real_data, cells: (
        write_scgpt_checkpoint(folder, _vocab(real_data, "scgpt") / "default_census_vocab.json"),
        {},
    ),
    "tgpt": lambda folder, real_data, cells: (
        write_tgpt_checkpoint(folder, _vocab(real_data, "tgpt")),
        {},
    ),
    "text": lambda folder, real_data, cells: (bundled_checkpoint("text"), {"top_n": 16}),
    "scfoundation": lambda folder, real_data, cells: (
        write_scfoundation_checkpoint(
            folder, _vocab(real_data, "scfoundation") / "OS_scRNA_gene_index.19264.tsv"
        ),
        {},
    ),
    "uce": lambda folder, real_data, cells: (
        write_uce_checkpoint(folder, [g for i, g in enumerate(cells.genes) if i % 10]),
        {},
    ),
    "scbert": lambda folder, real_data, cells: (
        write_scbert_checkpoint(folder, top_expressed_genes(cells, 2000)),
        PERFORMER_SHAPE,
    ),
    "celllm": lambda folder, real_data, cells: (
        write_celllm_checkpoint(folder, top_expressed_genes(cells, 3000)),
        PERFORMER_SHAPE,
    ),
    "cellplm": lambda folder, real_data, cells: (write_cellplm_checkpoint(folder, real_data), {}),
}

"""CellLM parity: scdrugmap's `celllm` against OpenBioMed's own PerformerLM_CellLM.

The reference encoder (`open_biomed/models/cell/performer_celllm.py`, imported
from the checkout alone, so none of OpenBioMed's other models or data code is
needed) runs one cell per call on the cell's log2-normalised expression over the
panel, computed with scanpy as scBERT prescribes (`normalize_total` to 10^4, then
`log1p` base 2; OpenBioMed itself reads matrices preprocessed so). Its encodings
(`return_encodings=True`) are pooled as scdrugmap pools them, since OpenBioMed
publishes no cell pooling: the mean over the expressed-gene positions, or the CLS
output. One line per pooling; the figure is their max.

The checkpoint is the tests' small random one (`tests/celllm_checkpoint.py`): the
published file layout and key names, with a panel of 3,000 real PC9 symbols in place
of the 19,379-gene panel, which is not among the vocabularies in tests/data.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.common import (
    PC9_CONTROL,
    TESTS_DATA,
    Reference,
    parse_args,
    real_cells,
    reference_commit,
    reference_on_path,
    report,
    scdrugmap_embedding,
    work_folder,
)

REFERENCE = Reference("PharMolix/OpenBioMed", "ce3ccab")
DEFAULT_CELLS = 60
POOLINGS = ("mean", "cls")
NUM_TOKENS = 8  # the published CellLM's token count (configs/ctc/cellLM.json)
MAX_SEQ_LEN = 6000


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The small random CellLM of the tests, in the published layout, and its load options."""
    from scdrugmap.data.readers import read_matrix_file
    from tests.model_checkpoints import SMALL_CHECKPOINTS

    cells = read_matrix_file(PC9_CONTROL)
    checkpoint, params = SMALL_CHECKPOINTS["celllm"](folder / "celllm", TESTS_DATA, cells)
    return checkpoint, dict(params)


def reference_inputs(cells, panel: list[str]) -> np.ndarray:
    """(cells, panel) float32: counts on the panel, scanpy's normalize_total and log1p base 2."""
    import anndata
    import scanpy as sc
    from scipy import sparse

    column = {gene: i for i, gene in reversed(list(enumerate(cells.genes)))}
    rows, cols = [], []
    for position, gene in enumerate(panel):
        if gene in column:
            rows.append(column[gene])
            cols.append(position)
    moving = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(cells.genes), len(panel))
    )
    on_panel = sparse.csr_matrix(cells.counts.astype(np.float32) @ moving, dtype=np.float32)
    adata = anndata.AnnData(X=on_panel)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata, base=2)
    return np.asarray(adata.X.toarray(), dtype=np.float32)


def reference_embeddings(reference: Path, checkpoint: Path, params: dict, inputs: np.ndarray):
    """{pooling: (cells, dim)} from the reference's PerformerLM_CellLM, one cell per call."""
    import torch

    from scdrugmap.embed.models.celllm import GENE2VEC, WEIGHTS
    from tests.performer_checkpoint import SMALL

    with reference_on_path(reference / "open_biomed" / "models" / "cell"):
        performer_celllm = importlib.import_module("performer_celllm")
    model = performer_celllm.PerformerLM_CellLM(
        num_tokens=NUM_TOKENS,
        max_seq_len=MAX_SEQ_LEN,
        dim=SMALL["dim"],
        depth=SMALL["depth"],
        heads=params["heads"],
        dim_head=params["dim_head"],
        g2v_position_emb=True,
        gene2vec_path=str(checkpoint / GENE2VEC),
        gene_num=inputs.shape[1],
    )
    state = torch.load(checkpoint / WEIGHTS, weights_only=True)["model_state_dict"]
    model.load_state_dict(state)
    model.eval()
    pooled: dict[str, list[np.ndarray]] = {pooling: [] for pooling in POOLINGS}
    with torch.no_grad():
        for row in inputs:
            encodings, gene_pos = model(torch.from_numpy(row[None]), return_encodings=True)
            genes = gene_pos[0] != model.pad_gene_id
            genes[0] = False  # the CLS position
            pooled["cls"].append(encodings[0, 0].numpy())
            pooled["mean"].append(encodings[0, genes].mean(0).numpy())
    return {pooling: np.stack(rows) for pooling, rows in pooled.items()}


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(__doc__.splitlines()[0], REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    cells = real_cells(args.cells)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder)
        panel = (checkpoint / "gene_panel.txt").read_text().split()
        theirs = reference_embeddings(
            args.reference, checkpoint, params, reference_inputs(cells, panel)
        )
        diffs = []
        for pooling in POOLINGS:
            (folder / pooling).mkdir(exist_ok=True)
            ours = scdrugmap_embedding(
                folder / pooling, cells, "celllm", checkpoint, {**params, "pooling": pooling}
            )
            diffs.append(
                report(f"celllm pooling={pooling}", ours, theirs[pooling], commit, REFERENCE.repo)
            )
    return max(diffs)


if __name__ == "__main__":
    main()

"""scBERT parity: scdrugmap's pooled encodings against the authors' preprocess.py and PerformerLM.

The reference is TencentAILabHealthcare/scBERT, from the checkout: `preprocess.py` run
unchanged as a script (the cells mapped onto the panel of `./data/panglao_10000.h5ad`,
`filter_cells(min_genes=200)`, `normalize_total(1e4)`, `log1p(base=2)`), then its
`performer_pytorch.PerformerLM` built as `predict.py` builds it (`local_attn_heads=0`,
`g2v_position_emb=True`, the checkpoint's `model_state_dict` loaded strictly; width,
depth and heads of the small random checkpoint, not predict.py's 200 x 6 x 10) and
`predict.py`'s per-cell loop (values above `bin_num` clipped to it, truncated to
integer tokens, one token 0 appended, one cell per call), with `return_encodings=True`:
scBERT has no cell embedding of its own, so the three poolings scdrugmap offers (`mean`
over all positions, `expressed`: positions whose token is above 0, `last`: the appended
token) are applied to the reference's final normalised states. The tokens the reference
gives its model are compared with scdrugmap's, cell for cell.

The panel is the 16,906 most expressed PC9 symbols, as the tests' builder writes it
(`gene_panel.txt`; the published PanglaoDB panel comes with scBERT's data, not in
tests/data, so the panel has its size but not its genes), written as the
var names of `data/panglao_10000.h5ad` for preprocess.py; `Gene2VecPositionalEmbedding`
reads `../data/gene2vec_16906.npy`, so the model is built in a folder below that `data`.
Cells that preprocess.py's `filter_cells(min_genes=200)` drops (scdrugmap keeps every
cell) would be left out of the comparison and counted. The scripts' printing goes to
`reference.log` in the work folder. Beyond scdrugmap's packages it needs einops,
local-attention and scanpy.

One line per pooling; the value returned is the largest.
"""

from __future__ import annotations

import runpy
from collections.abc import Sequence
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch

from parity.common import (
    PC9_CONTROL,
    Reference,
    forgetting,
    in_folder,
    parse_args,
    real_cells,
    reference_commit,
    reference_on_path,
    report,
    scdrugmap_embedding,
    work_folder,
)
from scdrugmap.data.readers import SourceTable, read_matrix_file

REFERENCE = Reference("TencentAILabHealthcare/scBERT", "262fd4b")
DEFAULT_CELLS = 80
POOLINGS = ("mean", "expressed", "last")
BIN_NUM = 5  # predict.py's --bin_num: CLASS = bin_num + 2 tokens
PANEL_SIZE = 16_906  # the published panel's size


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The tests' small random PerformerLM (panglao_pretrain.pth, gene2vec_16906.npy,
    gene_panel.txt) on the 16,906 most expressed PC9 symbols (the published panel's size;
    the tests' 2,000 cover too few of a cell's genes for `scdrugmap embed`'s default
    coverage check); its attention shape as --param options (the published checkpoint
    does not record it)."""
    from tests.data_files import top_expressed_genes
    from tests.performer_checkpoint import SHAPE
    from tests.scbert_checkpoint import write_scbert_checkpoint

    panel = top_expressed_genes(read_matrix_file(PC9_CONTROL), PANEL_SIZE)
    return write_scbert_checkpoint(folder / "scbert", panel), dict(SHAPE)


def reference_preprocessed(checkpoint: Path, cells: SourceTable, reference: Path, folder: Path):
    """preprocess.py's output for the cells, with the checkpoint's panel as PanglaoDB's."""
    import anndata

    from tests.data_files import write_h5ad

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    panel = (checkpoint / "gene_panel.txt").read_text().split()
    write_h5ad(data / "panglao_10000.h5ad", np.zeros((1, len(panel)), np.float32), panel, ["panel"])
    barcodes = [str(b) for b in cells.barcodes]
    write_h5ad(data / "your_raw_data.h5ad", cells.counts, list(map(str, cells.genes)), barcodes)
    with ExitStack() as stack:
        log = stack.enter_context((folder / "reference.log").open("a"))
        stack.enter_context(redirect_stdout(log))
        stack.enter_context(redirect_stderr(log))
        stack.enter_context(in_folder(folder))
        runpy.run_path(str(reference / "preprocess.py"), run_name="__main__")
    return anndata.read_h5ad(data / "preprocessed_data.h5ad")


def reference_encodings(
    checkpoint: Path, preprocessed, reference: Path, folder: Path, params: dict
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """predict.py's loop with `return_encodings=True`: per cell, tokens and final states."""
    state = torch.load(checkpoint / "panglao_pretrain.pth", weights_only=True)
    state = state["model_state_dict"]
    data = folder / "data"
    gene2vec = data / "gene2vec_16906.npy"
    if not gene2vec.exists():
        gene2vec.symlink_to((checkpoint / "gene2vec_16906.npy").resolve())
    run = folder / "run"
    run.mkdir(exist_ok=True)
    n_class = BIN_NUM + 2
    tokens, encodings = [], []
    with ExitStack() as stack:
        log = stack.enter_context((folder / "reference.log").open("a"))
        stack.enter_context(redirect_stdout(log))
        stack.enter_context(redirect_stderr(log))
        stack.enter_context(reference_on_path(reference))
        stack.enter_context(forgetting(("performer_pytorch",)))
        stack.enter_context(in_folder(run))
        from performer_pytorch import PerformerLM

        model = PerformerLM(
            num_tokens=n_class,
            dim=state["token_emb.weight"].shape[1],
            depth=1 + max(int(k.split(".")[3]) for k in state if k.startswith("performer.net.")),
            max_seq_len=preprocessed.shape[1] + 1,
            heads=int(params["heads"]),
            dim_head=int(params["dim_head"]),
            local_attn_heads=0,
            g2v_position_emb=True,
        )
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            for index in range(preprocessed.shape[0]):
                full_seq = preprocessed.X[index].toarray()[0]
                full_seq[full_seq > (n_class - 2)] = n_class - 2
                full_seq = torch.from_numpy(full_seq).long()
                full_seq = torch.cat((full_seq, torch.tensor([0]))).unsqueeze(0)
                hidden = model(full_seq, return_encodings=True)
                tokens.append(full_seq[0].numpy())
                encodings.append(hidden[0].numpy())
    return tokens, encodings


def pooled(tokens: np.ndarray, hidden: np.ndarray, pooling: str) -> np.ndarray:
    """scdrugmap's three poolings, applied to the reference's states (averaged in float64:
    numpy's float32 mean down 16,907 rows would add its own rounding, some 4e-6)."""
    hidden = hidden.astype(np.float64)
    if pooling == "last":
        return hidden[-1]
    if pooling == "mean":
        return hidden.mean(0)
    return hidden[tokens > 0].mean(0)


def our_tokens(checkpoint: Path, cells: SourceTable, params: dict) -> np.ndarray:
    from scdrugmap.embed.models.scbert import ScBERTEmbedder

    embedder = ScBERTEmbedder.load(checkpoint, **params)
    return embedder.tokenize(cells.counts, list(cells.genes)).tokens


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(__doc__.splitlines()[0], REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder / "checkpoint")
        cells = real_cells(args.cells)
        preprocessed = reference_preprocessed(checkpoint, cells, args.reference, folder / "ref")
        kept = np.flatnonzero(np.isin([str(b) for b in cells.barcodes], preprocessed.obs_names))
        if len(kept) < len(cells.barcodes):
            print(f"scbert: preprocess.py dropped {len(cells.barcodes) - len(kept)} cells")
        tokens, encodings = reference_encodings(
            checkpoint, preprocessed, args.reference, folder / "ref", params
        )
        ours_tokens = our_tokens(checkpoint, cells, params)[kept]
        differing = int((np.vstack(tokens) != ours_tokens).sum())
        if differing:
            raise SystemExit(f"scbert: {differing} tokens differ from the reference's")
        worst = 0.0
        for pooling in POOLINGS:
            (folder / f"ours-{pooling}").mkdir(exist_ok=True)
            ours = scdrugmap_embedding(
                folder / f"ours-{pooling}", cells, "scbert", checkpoint,
                {**params, "pooling": pooling},
            )[kept]  # fmt: skip
            theirs = np.vstack([pooled(t, h, pooling) for t, h in zip(tokens, encodings)])
            name = f"scbert pooling={pooling}, identical tokens"
            worst = max(worst, report(name, ours, theirs, commit, REFERENCE.repo))
    return worst


if __name__ == "__main__":
    main()

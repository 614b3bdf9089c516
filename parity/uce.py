"""UCE parity: scdrugmap's cell embedding against the authors' eval_single_anndata pipeline.

The reference is snap-stanford/UCE's `evaluate.py` as `eval_single_anndata.py` drives it,
imported from the checkout: its `AnndataProcessor` (`preprocess_anndata`: the h5ad
subset to genes with protein embeddings and written as an int64 count memmap;
`generate_idxs`: token rows, chromosome codes and starts per gene), then its model
(`model.TransformerModel` with the file's state dict loaded strictly and
`get_ESM2_embeddings`'s tokens) run on the cell sentences of its `MultiDatasetSentences`
and `MultiDatasetSentenceCollator` (`eval_data.sample_cell_sentences`), one cell per batch,
with `pe_embedding`, `normalize` and `forward` as `run_eval` calls them. `run_eval` itself
is not called: it builds the network with a fixed width of 1,280, and the random
checkpoint is 40 wide; the loop here makes the same calls with the checkpoint's shapes.

Settings: both sides at their defaults, the filter on (the reference's `--filter`: genes
seen in fewer than 10 of the cells dropped, then cells with fewer than 25 genes; scdrugmap's
`filter=true`), `batch_size=1`
(the reference passes its padding mask as floats, which PyTorch adds to the scores, so
with padding its output shifts with the longest cell of the batch; see the README).

The reference's files are laid out in its working folder as it expects them
(`./model_files/...`, read relative to the working directory when its modules are
imported): the random checkpoint's files, plus an empty protein-embedding dictionary for
each species other than human (its `get_species_to_pe` loads every species) and the
checkout's `model_files/new_species_protein_embeddings.csv`. `requests.get` is made to
fail, so nothing is downloaded.

Randomness: `sample_cell_sentences` draws the genes of a cell with `np.random.choice`
(log1p weights, with replacement) and orders chromosomes with `np.random.shuffle`. For
the run both are replaced by functions handing out scdrugmap's draws for that cell (the
genes its tokenizer picked, as positions among the genes it knows, and the order of the
chromosome tokens in its sentence); each call is checked against the cell it is for.
The sentences the reference builds are compared with scdrugmap's, token for token. A
second line checks the draws against the reference's law: per cell, our picks grouped by
the gene's count (one probability per group), against 1,024 x the reference's own
probabilities (`p` as it hands it to `np.random.choice`), as one chi-square over all
cells (groups merged until 5 picks are expected).

Beyond scdrugmap's packages it needs scanpy and tqdm (its modules import them).
"""

from __future__ import annotations

import pickle
import shutil
import sys
import types
from collections.abc import Sequence
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from scipy import stats

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
from scdrugmap.embed.models.uce import ALL_TOKENS, PROTEIN_FILES, TOKENS

REFERENCE = Reference("snap-stanford/UCE", "8ead6e0")
DEFAULT_CELLS = 40
SAMPLE_SIZE = 1024  # eval_single_anndata.py's --sample_size, scdrugmap's default
PAD_LENGTH = 1536
# Modules of the checkout, dropped after the run (their names are common).
_REFERENCE_MODULES = ("evaluate", "model", "eval_data", "utils", "data_proc")


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The tests' small random UCE directory: every tenth real PC9 gene left without a
    protein embedding, so the subsetting to known genes is exercised.

    `species_chrom.csv` is then written with upper-case symbols, one row per species and
    symbol, as the published file has them: the reference looks genes up there by their
    upper-cased symbol (`adata_path_to_prot_chrom_starts`), where the tests' builder keeps
    the data's case (C10orf10; PC9 holds both C2orf15 and C2ORF15)."""
    import pandas as pd

    from tests.uce_checkpoint import write_uce_checkpoint

    genes = read_matrix_file(PC9_CONTROL).genes
    checkpoint = write_uce_checkpoint(folder / "uce", [g for i, g in enumerate(genes) if i % 10])
    table = pd.read_csv(checkpoint / "species_chrom.csv")
    table["gene_symbol"] = table["gene_symbol"].astype(str).str.upper()
    table.drop_duplicates(["species", "gene_symbol"]).to_csv(
        checkpoint / "species_chrom.csv", index=False
    )
    return checkpoint, {}


def _link(target: Path, link: Path) -> None:
    if not link.exists():
        link.symlink_to(target.resolve())


def lay_out(checkpoint: Path, reference: Path, folder: Path) -> Path:
    """`folder/model_files` as the reference reads it."""
    files = folder / "model_files"
    proteins = files / "protein_embeddings"
    proteins.mkdir(parents=True, exist_ok=True)
    for name in ("species_chrom.csv", "species_offsets.pkl", "all_tokens.torch"):
        _link(checkpoint / name, files / name)
    for species, name in PROTEIN_FILES.items():
        if species == "human":
            _link(checkpoint / "protein_embeddings" / name, proteins / name)
        elif not (proteins / name).exists():
            torch.save({}, proteins / name)
    extra = "new_species_protein_embeddings.csv"
    shutil.copy(reference / "model_files" / extra, files / extra)
    return files


def write_cells(path: Path, cells: SourceTable) -> Path:
    import anndata
    import pandas as pd
    from scipy import sparse

    anndata.AnnData(
        X=sparse.csr_matrix(cells.counts, dtype=np.float32),
        obs=pd.DataFrame(index=[str(b) for b in cells.barcodes]),
        var=pd.DataFrame(index=[str(g) for g in cells.genes]),
    ).write_h5ad(path)
    return path


def filtered_genes(cells: SourceTable) -> np.ndarray:
    """The genes both filters keep: seen in at least 10 of the cells (scanpy's rule)."""
    return np.asarray((cells.counts > 0).sum(axis=0)).ravel() >= 10


def our_draws(
    checkpoint: Path, cells: SourceTable, params: dict
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """scdrugmap's cell sentences, and its picks per cell as positions among the genes it
    knows and the filter keeps (in data order, as the reference's subset of genes with
    protein embeddings): `UCETokenizer.__call__`'s steps on the filtered counts, which the
    sentence alone cannot tell apart where two columns share a gene (C2orf15 and C2ORF15)."""
    from scipy import sparse

    from scdrugmap.embed.cell_filters import without_filtered_genes
    from scdrugmap.embed.cell_random import CellGenes, cell_seeds
    from scdrugmap.embed.models.uce import UCEEmbedder

    embedder = UCEEmbedder.load(checkpoint, **params)
    tokenizer = embedder.tokenizer
    genes = list(cells.genes)
    kept = filtered_genes(cells)
    counts = without_filtered_genes(sparse.csr_matrix(cells.counts), kept)
    sentences = embedder.tokenize(counts, genes)
    columns, tokens, _, _ = tokenizer.gene_map(genes)
    known = sparse.csr_matrix(counts[:, columns], dtype=np.float32)
    known.eliminate_zeros()
    known.sort_indices()
    per_cell = np.diff(known.indptr)
    if (per_cell == 0).any():
        raise SystemExit("uce: a cell has no known gene; the reference cannot draw from it")
    expressed = CellGenes(
        tokens[known.indices], known.data, np.repeat(np.arange(known.shape[0]), per_cell),
        per_cell,
    )  # fmt: skip
    picked = known.indices[tokenizer.sample(expressed, cell_seeds(expressed, tokenizer.seed))]
    # Positions among the known genes the filter keeps, as the reference numbers them.
    picked = (np.cumsum(kept[columns]) - 1)[picked]
    size = tokenizer.sample_size
    picks = [picked[i * size : (i + 1) * size] for i in range(known.shape[0])]
    return [sentences.cell(i) for i in range(known.shape[0])], picks


class DrawQueue:
    """Hands `sample_cell_sentences` our picks and chromosome order, cell by cell."""

    def __init__(self, sentences: list[np.ndarray], picks: list[np.ndarray]) -> None:
        self.sentences = sentences
        self.our_picks = picks
        self.cell = -1
        self.laws: list[np.ndarray] = []  # the reference's p, per cell
        self.picks: list[np.ndarray] = []  # the picks handed to it, per cell

    def choice(self, a, size=None, replace=True, p=None):
        self.cell += 1
        if self.cell >= len(self.sentences):
            raise RuntimeError("the reference asked for the genes of one cell more than expected")
        if size != SAMPLE_SIZE or not replace or p is None:
            raise RuntimeError(f"unexpected np.random.choice(size={size}, replace={replace})")
        picks = self.our_picks[self.cell]
        p = np.asarray(p, dtype=np.float64)
        if len(picks) != size or len(p) != len(np.asarray(a)) or (p[picks] <= 0).any():
            raise RuntimeError(f"cell {self.cell}: our draws do not fit the reference's genes")
        self.laws.append(p)
        self.picks.append(picks)
        return picks.copy()

    def shuffle(self, chromosomes) -> None:
        sentence = self.sentences[self.cell]
        ours = sentence[sentence >= TOKENS["chrom_offset"]] - TOKENS["chrom_offset"]
        if sorted(ours.tolist()) != sorted(np.asarray(chromosomes).tolist()):
            raise RuntimeError(f"cell {self.cell}: the chromosomes drawn differ")
        chromosomes[:] = ours

    def finished(self) -> None:
        if self.cell != len(self.sentences) - 1:
            raise RuntimeError(f"the reference drew for {self.cell + 1} of {len(self.sentences)}")


def _no_download(*args, **kwargs):
    raise RuntimeError("the parity run downloads nothing; a reference file is missing")


def _reference_args(folder: Path, h5ad: Path, model_file: Path, shapes: dict):
    """eval_single_anndata.py's arguments at their defaults, but for the small shapes,
    the files laid out here and one cell per batch."""
    files = folder / "model_files"
    return types.SimpleNamespace(
        adata_path=str(h5ad), dir=f"{folder}/", species="human", filter=True, skip=False,
        model_loc=str(model_file), batch_size=1, pad_length=PAD_LENGTH, pad_token_idx=0,
        chrom_token_left_idx=1, chrom_token_right_idx=2, cls_token_idx=3,
        CHROM_TOKEN_OFFSET=TOKENS["chrom_offset"], sample_size=SAMPLE_SIZE, CXG=True,
        nlayers=shapes["nlayers"], output_dim=shapes["output_dim"], d_hid=shapes["d_hid"],
        token_dim=shapes["token_dim"], multi_gpu=False,
        spec_chrom_csv_path=str(files / "species_chrom.csv"),
        token_file=str(files / "all_tokens.torch"),
        protein_embeddings_dir=str(files / "protein_embeddings") + "/",
        offset_pkl_path=str(files / "species_offsets.pkl"),
    )  # fmt: skip


def reference_embedding(
    checkpoint: Path,
    cells: SourceTable,
    reference: Path,
    folder: Path,
    ours: tuple[list[np.ndarray], list[np.ndarray]],
) -> tuple[np.ndarray, DrawQueue, list[np.ndarray]]:
    """The reference's embeddings, the draws handed to it, and its cell sentences."""
    from tests.uce_checkpoint import SHAPES

    folder.mkdir(parents=True, exist_ok=True)
    lay_out(checkpoint, reference, folder)
    h5ad = write_cells(folder / "parity.h5ad", cells)
    args = _reference_args(folder, h5ad, checkpoint / "4layer_model.torch", SHAPES)
    accelerator = types.SimpleNamespace(
        is_main_process=True, is_local_main_process=True, wait_for_everyone=lambda: None
    )
    with ExitStack() as stack:
        log = stack.enter_context((folder / "reference.log").open("a"))
        stack.enter_context(redirect_stdout(log))
        stack.enter_context(redirect_stderr(log))
        stack.enter_context(reference_on_path(reference))
        stack.enter_context(in_folder(folder))
        stack.enter_context(forgetting(_REFERENCE_MODULES))
        import evaluate
        from eval_data import MultiDatasetSentenceCollator, MultiDatasetSentences
        from model import TransformerModel

        stack.enter_context(mock.patch.object(sys.modules["utils"].requests, "get", _no_download))
        processor = evaluate.AnndataProcessor(args, accelerator)
        processor.preprocess_anndata()
        processor.generate_idxs()
        with open(processor.shapes_dict_path, "rb") as handle:
            shapes_dict = pickle.load(handle)
        queue = DrawQueue(*ours)

        model = TransformerModel(
            token_dim=SHAPES["token_dim"], d_model=SHAPES["d_model"], nhead=20,
            d_hid=SHAPES["d_hid"], nlayers=SHAPES["nlayers"], dropout=0.05,
            output_dim=SHAPES["output_dim"],
        )  # fmt: skip
        model.pe_embedding = torch.nn.Embedding.from_pretrained(
            torch.zeros(ALL_TOKENS, SHAPES["token_dim"])
        )
        model.load_state_dict(torch.load(args.model_loc, map_location="cpu"), strict=True)
        tokens = evaluate.get_ESM2_embeddings(args)
        if tokens.shape[0] != ALL_TOKENS:
            model.pe_embedding = torch.nn.Embedding.from_pretrained(tokens)
        model = model.eval()
        dataset = MultiDatasetSentences(
            sorted_dataset_names=[processor.name], shapes_dict=shapes_dict, args=args,
            npzs_dir=args.dir, dataset_to_protein_embeddings_path=processor.pe_idx_path,
            datasets_to_chroms_path=processor.chroms_path,
            datasets_to_starts_path=processor.starts_path,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=1, shuffle=False,
            collate_fn=MultiDatasetSentenceCollator(args), num_workers=0,
        )  # fmt: skip
        embeddings, sentences = [], []
        with (
            mock.patch.object(np.random, "choice", queue.choice),
            mock.patch.object(np.random, "shuffle", queue.shuffle),
            torch.no_grad(),
        ):
            for batch in loader:
                sentences.append(batch[0][0].long().numpy())
                tokens_in = model.pe_embedding(batch[0].permute(1, 0).long())
                tokens_in = torch.nn.functional.normalize(tokens_in, dim=2)
                _, embedding = model.forward(tokens_in, mask=batch[1])
                embeddings.append(embedding.numpy())
        queue.finished()
    return np.vstack(embeddings), queue, sentences


def check_sentences(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if len(a) != len(b) or (a != b).any():
            raise SystemExit(f"uce: cell {i}: the reference's sentence differs from ours")


def law_check(queue: DrawQueue) -> tuple[float, int, float]:
    """Chi-square of our picks against the reference's probabilities, genes grouped by their
    probability (by count) within each cell, groups merged until 5 picks are expected."""
    statistic, dof = 0.0, 0
    for p, picks in zip(queue.laws, queue.picks):
        levels, group = np.unique(np.round(p[p > 0], 12), return_inverse=True)
        expected = np.bincount(group, weights=p[p > 0] * SAMPLE_SIZE, minlength=len(levels))
        index = np.full(len(p), -1)
        index[p > 0] = group
        observed = np.bincount(index[picks], minlength=len(levels)).astype(np.float64)
        merged_e, merged_o, e, o = [], [], 0.0, 0.0
        for ei, oi in zip(expected, observed):
            e, o = e + ei, o + oi
            if e >= 5:
                merged_e.append(e)
                merged_o.append(o)
                e = o = 0.0
        if e and merged_e:
            merged_e[-1] += e
            merged_o[-1] += o
        merged_e, merged_o = np.asarray(merged_e), np.asarray(merged_o)
        statistic += float(((merged_o - merged_e) ** 2 / merged_e).sum())
        dof += len(merged_e) - 1
    return statistic, dof, float(stats.chi2.sf(statistic, dof))


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(__doc__.splitlines()[0], REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder / "checkpoint")
        cells = real_cells(args.cells)
        draws = our_draws(checkpoint, cells, params)
        theirs, queue, sentences = reference_embedding(
            checkpoint, cells, args.reference, folder / "reference", draws
        )
        check_sentences(draws[0], sentences)
        (folder / "ours").mkdir(exist_ok=True)
        ours = scdrugmap_embedding(folder / "ours", cells, "uce", checkpoint, params)
        diff = report("uce, one cell per batch", ours, theirs, commit, REFERENCE.repo)
        statistic, dof, p_value = law_check(queue)
        print(
            f"uce draws: picks by gene count against the reference's log1p law, chi-square "
            f"{statistic:.1f} on {dof} df, p = {p_value:.2f} "
            f"({len(queue.picks)} cells x {SAMPLE_SIZE:,} picks)"
        )
    return diff


if __name__ == "__main__":
    main()

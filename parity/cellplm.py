"""CellPLM parity: scdrugmap's `cellplm` against OmicsML's own CellEmbeddingPipeline.

Two real PC9 samples (the first half of `--cells` from the control file, the rest
from the erlotinib file), ingested by the `scdrugmap` command line as two samples,
embedded in blocks of 7 and 30 cells and as whole samples (the default); the
reference runs `CellEmbeddingPipeline.predict` on the same cells with `obs["batch"]`
= sample and `batch_size` = the block size (0: the whole sample). One line per
block setting; the figure is their max.

Randomness: the reference draws its Gumbel noise with `torch.rand_like` inside
`GumbelSoftmax.sample_gumbel`; the script hands it scdrugmap's per-cell uniforms
instead (only the `torch` name that the module `CellPLM.latent.autoencoders`
sees is replaced, by a stand-in whose `rand_like` returns the next block's draws
and which passes every other name to torch), so the reference's own transform,
softmax and hard choice run on our draws. A second line checks that our draws have
the reference's distribution: Gumbel(0, 1) through the reference's transform,
against its own `torch.rand_like` draws and against the exact law.

Genes: the reference maps gene symbols to Ensembl IDs online through mygene.info
(`symbol_to_ensembl`); the script puts an offline stand-in for the `mygene`
module in its place, answering `querymany` from the checkpoint's
`gene_name_id_dict.pkl` (the map scdrugmap reads), so the reference's own
conversion and de-duplication code runs on the same map.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.common import (
    TESTS_DATA,
    Reference,
    _scdrugmap,
    parse_args,
    real_cells,
    reference_commit,
    reference_on_path,
    report,
    work_folder,
)

REFERENCE = Reference("OmicsML/CellPLM", "b59ee76")
DEFAULT_CELLS = 200
PC9_ERLOTINIB = TESTS_DATA / "pc9_erlotinib" / "Day11_Erlotinib.txt.gz"
SAMPLES = ("control", "erlotinib")  # as the reference's LabelEncoder orders them
BLOCKS = (7, 30, None)  # None: whole samples, scdrugmap's default and the reference's


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The tests' small random OmicsFormer (real config and 19,374-gene list, Geneformer's
    symbol map) in the published layout; it needs no load option."""
    from tests.cellplm_checkpoint import write_cellplm_checkpoint

    return write_cellplm_checkpoint(folder / "cellplm", TESTS_DATA), {}


def two_samples(n_cells: int):
    """The first n // 2 control cells and the first n - n // 2 erlotinib cells."""
    from scdrugmap.data.readers import SourceTable, read_matrix_file

    erlotinib = read_matrix_file(PC9_ERLOTINIB)
    rest = n_cells - n_cells // 2
    if n_cells < 2 or rest > erlotinib.counts.shape[0]:
        raise SystemExit(f"--cells {n_cells}: needs 2 to {2 * erlotinib.counts.shape[0]} cells")
    second = SourceTable(
        counts=erlotinib.counts[:rest],
        genes=erlotinib.genes,
        barcodes=erlotinib.barcodes[:rest],
        obs=erlotinib.obs.iloc[:rest],
        path=erlotinib.path,
    )
    return real_cells(n_cells // 2), second


def scdrugmap_embeddings(folder: Path, samples, checkpoint: Path) -> dict:
    """{block: (cells, dim)} through the command line: one ingest of both samples, one embed
    per block setting, one export each; rows as the samples list the cells."""
    import anndata

    from tests.data_files import write_sample

    store = folder / "store"
    files = [
        str(write_sample(folder / f"{name}.tsv", table.counts, list(table.genes), name))
        for name, table in zip(SAMPLES, samples)
    ]
    _scdrugmap("--store", str(store), "ingest", *files, "--dataset", "parity", "--replace",
               "--sample", SAMPLES[0], "--sample", SAMPLES[1],
               "--label", "sensitive", "--label", "resistant")  # fmt: skip
    wanted = [f"{name}{i}" for name, table in zip(SAMPLES, samples)
              for i in range(table.counts.shape[0])]  # fmt: skip
    out = {}
    for block in BLOCKS:
        key = f"parity-cellplm-{block or 'whole'}"
        options = [] if block is None else [f"--param=block_size={block}"]
        _scdrugmap("--store", str(store), "embed", "--model", "cellplm", "--checkpoint",
                   str(checkpoint), "--key", key, "--datasets", "parity", "--device", "cpu",
                   "--replace", *options)  # fmt: skip
        exported = folder / f"{key}.h5ad"
        _scdrugmap("--store", str(store), "export", "--embedding", key, "--dataset", "parity",
                   "--out", str(exported))  # fmt: skip
        adata = anndata.read_h5ad(exported)
        rows = adata.obs_names.get_indexer(wanted)
        out[block] = np.asarray(adata.obsm[f"X_{key}"], dtype=np.float64)[rows]
    return out


def our_uniforms(checkpoint: Path, samples) -> list[np.ndarray]:
    """scdrugmap's Gumbel uniforms of each sample's cells (they depend on the cell alone)."""
    from scdrugmap.embed.models.cellplm import CellPLMEmbedder

    embedder = CellPLMEmbedder.load(checkpoint)
    return [embedder.tokenize(t.counts, list(t.genes)).uniforms for t in samples]


class HandedDraws(types.ModuleType):
    """`torch` as the reference's GMVAE module sees it, with our uniforms for `rand_like`."""

    def __init__(self, torch, draws: list[np.ndarray]) -> None:
        super().__init__("torch")
        self._torch, self._draws = torch, iter(draws)

    def rand_like(self, like, **_):
        draw = next(self._draws)
        if tuple(draw.shape) != tuple(like.shape):
            raise SystemExit(f"cellplm: the reference asked for {tuple(like.shape)} draws, "
                             f"the next block has {draw.shape}")  # fmt: skip
        return self._torch.from_numpy(draw).to(like)

    def __getattr__(self, name: str):
        return getattr(self._torch, name)


def offline_mygene(names: dict) -> types.ModuleType:
    """A `mygene` module whose querymany answers symbol -> Ensembl from `names`."""
    import pandas as pd

    class MyGeneInfo:
        def querymany(self, queries, scopes=None, fields=None, as_dataframe=False, **_):
            if scopes != "symbol" or fields != "ensembl.gene" or not as_dataframe:
                raise SystemExit("cellplm: the offline mygene answers symbol -> ensembl.gene")
            found = [names.get(str(q)) for q in queries]
            return pd.DataFrame({"ensembl.gene": found}, index=pd.Index(queries, name="query"))

    module = types.ModuleType("mygene")
    module.MyGeneInfo = MyGeneInfo
    return module


def reference_adata(samples):
    """Both samples on the union of their genes, obs["batch"] = sample, symbols as var."""
    import anndata
    import pandas as pd
    from scipy import sparse

    genes = list(dict.fromkeys([*samples[0].genes, *samples[1].genes]))
    column = {gene: i for i, gene in enumerate(genes)}
    parts = []
    for table in samples:
        moved = [column[g] for g in table.genes]
        move = sparse.csr_matrix(
            (np.ones(len(moved)), (np.arange(len(moved)), moved)), shape=(len(moved), len(genes))
        )
        parts.append(sparse.csr_matrix(table.counts.astype(np.float64) @ move))
    obs = pd.DataFrame(
        {"batch": [name for name, t in zip(SAMPLES, samples) for _ in range(t.counts.shape[0])]}
    )
    obs.index = [f"{n}{i}" for n, t in zip(SAMPLES, samples) for i in range(t.counts.shape[0])]
    return anndata.AnnData(X=sparse.vstack(parts).tocsr(), obs=obs, var=pd.DataFrame(index=genes))


def reference_embeddings(reference: Path, checkpoint: Path, samples, uniforms) -> dict:
    """{block: (cells, dim)} from the reference's CellEmbeddingPipeline, our draws handed in."""
    import torch

    from scdrugmap.embed.safe_pickle import load_plain_dictionary
    from tests.cellplm_checkpoint import VERSION

    names = load_plain_dictionary(checkpoint / "gene_name_id_dict.pkl")
    sys.modules["mygene"] = offline_mygene(names)
    with reference_on_path(reference):
        pipeline_module = importlib.import_module("CellPLM.pipeline.cell_embedding")
        gmvae = importlib.import_module("CellPLM.latent.autoencoders")
    adata = reference_adata(samples)
    out = {}
    for block in BLOCKS:
        pipeline = pipeline_module.CellEmbeddingPipeline(VERSION, str(checkpoint))
        draws = [
            u[start : start + (block or len(u))]
            for u in uniforms
            for start in range(0, len(u), block or len(u))
        ]
        gmvae.torch = HandedDraws(torch, draws)
        try:
            pred = pipeline.predict(adata, {"batch_size": block or 0}, device="cpu")
        finally:
            gmvae.torch = torch
        out[block] = pred.cpu().numpy().astype(np.float64)
    return out


def same_bag_diff(reference: Path, checkpoint: Path, samples, uniforms, ours) -> float:
    """The whole-sample run again with the reference's gene bag (`feat_enc`, the sum of log1p
    count x gene vector over a cell's genes) replaced by ours: what remains is the network."""
    import torch

    from scdrugmap.embed.models.cellplm import CellPLMEmbedder
    from tests.cellplm_checkpoint import VERSION

    embedder = CellPLMEmbedder.load(checkpoint)
    bags = []
    for table in samples:
        values = embedder.tokenize(table.counts, list(table.genes)).values
        rows = np.repeat(np.arange(values.shape[0]), np.diff(values.indptr))
        tensor = torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack((rows, values.indices)).astype(np.int64)),
            torch.from_numpy(values.data),
            size=values.shape,
        )
        bags.append(torch.sparse.mm(tensor.coalesce(), embedder.model.embedder.feat_enc.emb))
    with reference_on_path(reference):
        pipeline_module = importlib.import_module("CellPLM.pipeline.cell_embedding")
        gmvae = importlib.import_module("CellPLM.latent.autoencoders")
    pipeline = pipeline_module.CellEmbeddingPipeline(VERSION, str(checkpoint))
    handed = iter(bags)
    pipeline.model.embedder.feat_enc.register_forward_hook(lambda *_: next(handed).detach())
    gmvae.torch = HandedDraws(torch, list(uniforms))
    try:
        theirs = pipeline.predict(reference_adata(samples), {"batch_size": 0}, device="cpu")
    finally:
        gmvae.torch = torch
    diff = float(np.max(np.abs(theirs.cpu().numpy() - ours)))
    print(
        f"cellplm whole samples, our gene bag handed to the reference: max|diff| {diff:.2g} "
        "(the rest of the figure is float32 summation order in the bag)"
    )
    return diff


def gumbel_check(reference: Path, checkpoint: Path) -> str:
    """Our draws for every real PC9 cell of tests/data, through the reference's transform,
    against its own torch.rand_like draws and against Gumbel(0, 1)."""
    import torch
    from scipy import stats

    from scdrugmap.data.readers import read_matrix_file

    with reference_on_path(reference):
        gmvae = importlib.import_module("CellPLM.latent.autoencoders")
    tables = [read_matrix_file(path) for path in (TESTS_DATA / "pc9_erlotinib").glob("*.txt.gz")]
    uniforms = np.vstack(our_uniforms(checkpoint, tables))
    layer = gmvae.GumbelSoftmax(1, uniforms.shape[1])
    zeros = torch.zeros(uniforms.shape)
    gmvae.torch = HandedDraws(torch, [uniforms])
    try:
        ours = layer.sample_gumbel(zeros).numpy().ravel().astype(np.float64)
    finally:
        gmvae.torch = torch
    torch.manual_seed(0)
    theirs = layer.sample_gumbel(zeros).numpy().ravel().astype(np.float64)
    two_sample = stats.ks_2samp(ours, theirs).pvalue
    exact = stats.kstest(ours, stats.gumbel_r.cdf).pvalue
    choice = np.bincount(uniforms.argmax(1), minlength=uniforms.shape[1])
    balance = stats.chisquare(choice).pvalue
    line = (
        f"cellplm Gumbel draws: {len(ours)} ({uniforms.shape[0]} cells x {uniforms.shape[1]}), "
        f"KS p={two_sample:.2f} against the reference's torch.rand_like draws, "
        f"p={exact:.2f} against Gumbel(0,1); mean {ours.mean():.4f} (0.5772), "
        f"var {ours.var():.4f} ({np.pi**2 / 6:.4f}); hard choice on equal logits "
        f"chi-square p={balance:.2f} over {uniforms.shape[1]} clusters"
    )
    print(line)
    return line


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(__doc__.splitlines()[0], REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    samples = two_samples(args.cells)
    with work_folder(args.work) as folder:
        checkpoint, _ = build_checkpoint(folder)
        uniforms = our_uniforms(checkpoint, samples)
        theirs = reference_embeddings(args.reference, checkpoint, samples, uniforms)
        ours = scdrugmap_embeddings(folder, samples, checkpoint)
        diffs = [
            report(
                f"cellplm blocks of {block or 'whole samples'}",
                ours[block],
                theirs[block],
                commit,
                REFERENCE.repo,
            )
            for block in BLOCKS
        ]
        same_bag_diff(args.reference, checkpoint, samples, uniforms, ours[None])
        gumbel_check(args.reference, checkpoint)
    return max(diffs)


if __name__ == "__main__":
    main()

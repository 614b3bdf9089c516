"""The built-in demo data: synthetic drug-response scRNA-seq that behaves like the real thing.

The demo has to exercise every step a real study does (gene matching across
data sets, batch effects, sample-level labels, sparse UMI counts) and to give
a benchmark whose answer is neither obvious nor hopeless, so that a broken
pipeline shows up as a broken result. Counts are therefore drawn from a
negative binomial (gamma-Poisson) around a log-linear mean built from:

* a baseline per gene, shared by all data sets (the "biology"), over ~2,000
  real human gene symbols, with ribosomal and mitochondrial genes highly
  expressed as in droplet data;
* a data-set batch effect (gene-wise factors, lineage markers, its own depth);
* a sample effect (gene-wise factors and a depth shift);
* cell states unrelated to the drug (random programmes, the cell cycle);
* a resistance programme whose per-cell strength differs between pre-treatment
  (sensitive) and post-treatment (resistant) samples but overlaps: some
  pre-treatment cells are drug-tolerant persisters, as in real data.

Labels are per sample, as in published data: every cell of a pre-treatment
sample is `sensitive` and every cell of a post-treatment sample `resistant`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy import sparse

__all__ = [
    "RESISTANCE_DOWN",
    "RESISTANCE_UP",
    "DemoDataset",
    "demo_gene_symbols",
    "generate_demo_datasets",
    "write_demo_files",
]

# Genes reported up in drug-resistant or drug-tolerant cancer cells (EMT,
# drug efflux, stemness, oxidative-stress response, bypass receptors).
RESISTANCE_UP: tuple[str, ...] = (
    "AXL", "VIM", "ZEB1", "ZEB2", "TWIST1", "SNAI2", "CD44", "ALDH1A1",
    "ABCB1", "ABCG2", "ABCC1", "NFE2L2", "SOX2", "NGFR", "FN1", "SPARC",
    "TGFBI", "SERPINE1", "CDH2", "TNC", "WNT5A", "KDM5A", "IGF1R", "PDGFRB",
    "AKR1C1", "NQO1", "HMOX1", "CAV1",
)  # fmt: skip
# Proliferation and epithelial genes that resistant survivors switch down.
RESISTANCE_DOWN: tuple[str, ...] = (
    "MKI67", "TOP2A", "CCNB1", "CDK1", "BIRC5", "AURKA", "PCNA", "MCM2",
    "TYMS", "EPCAM", "CDH1", "CLDN4", "KRT8", "ESRP1",
)  # fmt: skip

_CELL_CYCLE = (
    "MKI67", "TOP2A", "CCNB1", "CCNB2", "CDK1", "BIRC5", "AURKA", "AURKB",
    "PCNA", "MCM2", "MCM7", "TYMS", "UBE2C", "CENPF", "PLK1", "CDC20",
    "HMGB2", "TUBB", "TUBA1B", "H2AZ1",
)  # fmt: skip

# Highly expressed in almost every cell type; they carry much of each cell's UMIs.
_HOUSEKEEPING = (
    "ACTB", "ACTG1", "GAPDH", "B2M", "TMSB4X", "TMSB10", "MALAT1", "NEAT1",
    "EEF1A1", "EEF2", "TPT1", "FTL", "FTH1", "UBB", "UBC", "PTMA", "HSP90AB1",
    "HSPA8", "PPIA", "PFN1", "CFL1", "MYL6", "LDHA", "PGK1", "ENO1", "PKM",
    "ALDOA", "TPI1", "NPM1", "NACA", "HNRNPA1", "YBX1", "CALM2", "S100A6",
    "S100A10", "S100A11", "LGALS1", "ANXA2", "ARPC2", "CD63", "SERF2",
    "BTF3", "H3-3B", "HMGB1", "HMGN2", "PABPC1", "RACK1", "COX4I1", "COX7C",
    "ATP5F1E", "UQCRH", "NDUFA4", "SOD1", "PRDX1", "TXN", "GSTP1", "MIF",
)  # fmt: skip

_NAMED = (
    "EGFR", "ERBB2", "ERBB3", "MET", "KRAS", "NRAS", "HRAS", "BRAF", "RAF1",
    "MAP2K1", "MAPK1", "MAPK3", "PIK3CA", "PTEN", "AKT1", "MTOR", "TP53",
    "CDKN1A", "CDKN2A", "RB1", "MYC", "MYCN", "CCND1", "CDK4", "CDK6", "BCL2",
    "BCL2L1", "MCL1", "BAX", "BAK1", "CASP3", "CASP8", "FAS", "JUN", "FOS",
    "FOSB", "EGR1", "ATF3", "DUSP1", "DUSP6", "SPRY2", "SPRY4", "ETV4",
    "ETV5", "ESR1", "PGR", "AR", "GATA3", "FOXA1", "TFF1", "XBP1", "MITF",
    "PMEL", "MLANA", "TYR", "DCT", "SOX10", "SOX9", "PAX3", "NKX2-1", "SFTPC",
    "SFTPB", "NAPSA", "CEACAM5", "MUC1", "MUC5AC", "SCGB3A2", "AGR2",
    "KRT7", "HSPA1A", "HSPA1B", "DNAJB1", "HSPH1", "S100A4", "LGALS3",
    "ANXA1", "ANXA5", "TAGLN", "TAGLN2", "ACTA2", "MYL9", "THBS1",
    "CCN1", "CCN2", "LOX", "POSTN", "DCN", "LUM", "MMP1", "MMP2", "MMP9",
    "MMP14", "TIMP1", "TIMP3", "PLAU", "PLAUR", "ITGA2", "ITGA5", "ITGAV",
    "ITGB1", "ITGB4", "LAMB3", "LAMC2", "CD9", "CD81", "CD24", "CD47",
    "PROM1", "KIT", "NOTCH1", "NOTCH3", "HES1", "HEY1", "JAG1", "DLL1",
    "WNT7B", "CTNNB1", "AXIN2", "LGR5", "TCF7L2", "SMAD3", "SMAD7", "TGFB1",
    "TGFB2", "TGFBR2", "IL6", "IL6ST", "STAT1", "STAT3", "IRF1", "ISG15",
    "IFI6", "IFI27", "IFITM1", "IFITM3", "MX1", "OAS1", "BST2", "CD274",
    "PDCD1LG2", "IDO1", "SQSTM1", "GCLM", "TXNRD1", "SLC7A11", "G6PD",
    "PGD", "TKT", "HK2", "PFKFB3", "VEGFA", "HIF1A", "EPAS1", "CA9", "NDRG1",
    "BNIP3", "DDIT3", "DDIT4", "TRIB3", "ASNS", "ATF4", "XIST", "GAS5",
    "SNHG5", "MT2A", "MT1X", "TOP1", "TOP2B", "TUBB3", "MAPT", "STMN1",
    "CCNE1", "CCNA2", "E2F1", "FOXM1", "MYBL2", "RRM2", "TK1", "CLDN7",
    "GRHL2", "OVOL1", "ELF3", "SPINT2",
)  # fmt: skip

_BLOCK = 4096  # cells simulated at once

_LINEAGE = {
    "lung": ("NKX2-1", "SFTPB", "SFTPC", "NAPSA", "CEACAM5", "SCGB3A2", "KRT7", "MUC1"),
    "melanoma": ("MITF", "PMEL", "MLANA", "TYR", "DCT", "SOX10", "PAX3", "S100A4"),
    "breast": ("ESR1", "PGR", "GATA3", "FOXA1", "TFF1", "XBP1", "KRT7", "AGR2"),
}

# Number of members of each SLC family (suffixes A1..An), close to the human gene set.
_SLC_FAMILIES = {
    1: 7, 2: 14, 3: 2, 4: 11, 5: 12, 6: 20, 7: 11, 8: 3, 9: 9, 10: 7, 11: 2,
    12: 9, 13: 5, 14: 2, 15: 4, 16: 14, 17: 9, 18: 3, 19: 3, 20: 2, 22: 18,
    24: 5, 25: 51, 26: 11, 27: 6, 28: 3, 29: 4, 30: 10, 31: 2, 33: 1, 34: 3,
    35: 5, 36: 4, 37: 4, 38: 11, 39: 14, 40: 1, 41: 3, 43: 3, 44: 5, 45: 4,
    46: 3,
}  # fmt: skip


def _ribosomal() -> list[str]:
    rpl = [3, 4, 5, 6, 7, "7A", 8, 9, 10, "10A", 11, 12, 13, "13A", 14, 15, 17, 18, "18A",
           19, 21, 22, 23, "23A", 24, 26, 27, "27A", 28, 29, 30, 31, 32, 34, 35, "35A", 36,
           "36A", 37, "37A", 38, 39, 41, "P0", "P1", "P2"]  # fmt: skip
    rps = [2, 3, "3A", "4X", 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, "15A", 16, 17, 18, 19,
           20, 21, 23, 24, 25, 26, 27, "27A", 28, 29, "A"]  # fmt: skip
    return [f"RPL{s}" for s in rpl] + [f"RPS{s}" for s in rps]


def _mitochondrial() -> list[str]:
    return ["MT-ND1", "MT-ND2", "MT-ND3", "MT-ND4", "MT-ND4L", "MT-ND5", "MT-ND6",
            "MT-CO1", "MT-CO2", "MT-CO3", "MT-ATP6", "MT-ATP8", "MT-CYB"]  # fmt: skip


def _families() -> list[str]:
    keratins = [*range(1, 6), "6A", "6B", "6C", *range(7, 11), *range(12, 21), *range(23, 29),
                *range(31, 33), "33A", "33B", *range(34, 41), *range(71, 87)]  # fmt: skip
    collagens = ["1A1", "1A2", "2A1", "3A1", "4A1", "4A2", "4A3", "4A4", "4A5", "4A6", "5A1",
                 "5A2", "5A3", "6A1", "6A2", "6A3", "6A5", "6A6", "7A1", "8A1", "8A2", "9A1",
                 "9A2", "9A3", "10A1", "11A1", "11A2", "12A1", "13A1", "14A1", "15A1", "16A1",
                 "17A1", "18A1", "19A1", "20A1", "21A1", "22A1", "23A1", "24A1", "25A1",
                 "26A1", "27A1", "28A1"]  # fmt: skip
    hox = {"A": (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 13), "B": (1, 2, 3, 4, 5, 6, 7, 8, 9, 13),
           "C": (4, 5, 6, 8, 9, 10, 11, 12, 13), "D": (1, 3, 4, 8, 9, 10, 11, 12, 13)}  # fmt: skip
    hla = ["A", "B", "C", "E", "F", "G", "DRA", "DRB1", "DPA1", "DPB1", "DQA1", "DQB1",
           "DMA", "DMB"]  # fmt: skip
    eif = ["1", "1AX", "2S1", "2S2", "2S3", *(f"3{c}" for c in "ABCDEFGHIJKLM"), "4A1",
           "4A2", "4A3", "4B", "4E", "4G1", "4G2", "5", "5A", "6"]  # fmt: skip
    genes = [f"KRT{k}" for k in keratins]
    genes += [f"COL{c}" for c in collagens]
    genes += [f"SLC{fam}A{i}" for fam, n in _SLC_FAMILIES.items() for i in range(1, n + 1)]
    genes += [f"ZNF{i}" for i in range(100, 420)]
    genes += [f"NDUFA{i}" for i in range(1, 14)] + [f"NDUFB{i}" for i in range(1, 12)]
    genes += [f"NDUFS{i}" for i in range(1, 9)] + [f"NDUFV{i}" for i in range(1, 4)]
    genes += [f"PSMA{i}" for i in range(1, 8)] + [f"PSMB{i}" for i in range(1, 11)]
    genes += [f"PSMC{i}" for i in range(1, 7)] + [f"PSMD{i}" for i in range(1, 15)]
    genes += [f"MRPL{i}" for i in range(1, 58)] + [f"MRPS{i}" for i in range(2, 37)]
    genes += [f"HOX{c}{i}" for c, members in hox.items() for i in members]
    genes += [f"CXCL{i}" for i in (1, 2, 3, 5, 6, 8, 9, 10, 11, 12, 13, 14, 16, 17)]
    genes += [f"CCL{i}" for i in (2, 3, 4, 5, 7, 8, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21)]
    genes += [f"HLA-{h}" for h in hla] + [f"EIF{e}" for e in eif]
    genes += [f"TMEM{i}" for i in range(100, 300)] + [f"CCDC{i}" for i in range(80, 200)]
    genes += [f"WDR{i}" for i in range(1, 100)] + [f"ANKRD{i}" for i in range(1, 60)]
    genes += [f"KLHL{i}" for i in range(1, 43)] + [f"TRIM{i}" for i in range(2, 75)]
    return genes


def demo_gene_symbols() -> tuple[str, ...]:
    """The gene universe of the demo, fixed (independent of seed) so that data sets overlap."""
    ordered = [
        *_HOUSEKEEPING,
        *_ribosomal(),
        *_mitochondrial(),
        *RESISTANCE_UP,
        *RESISTANCE_DOWN,
        *_CELL_CYCLE,
        *_NAMED,
        *_families(),
    ]
    return tuple(dict.fromkeys(ordered))


@dataclass(frozen=True)
class _Spec:
    dataset_id: str
    metadata: dict[str, str]
    lineage: str
    samples: tuple[tuple[str, str, int], ...]  # (sample, response, cells at scale 1)
    depth: float  # median UMIs per cell
    strength: float  # how strongly the resistance programme shows in this data set


_SPECS = (
    _Spec(
        dataset_id="demo_lung_erlotinib",
        metadata={
            "drug": "erlotinib",
            "cancer_type": "lung adenocarcinoma",
            "tissue": "cell line",
            "therapy": "targeted",
            "regimen": "monotherapy",
        },
        lineage="lung",
        samples=(
            ("PC9_D0_rep1", "sensitive", 480),
            ("PC9_D0_rep2", "sensitive", 420),
            ("PC9_erlotinib_D11_rep1", "resistant", 460),
            ("PC9_erlotinib_D11_rep2", "resistant", 440),
        ),
        depth=2600.0,
        strength=1.0,
    ),
    _Spec(
        dataset_id="demo_melanoma_plx4720",
        metadata={
            "drug": "PLX4720",
            "cancer_type": "melanoma",
            "tissue": "cell line",
            "therapy": "targeted",
            "regimen": "monotherapy",
        },
        lineage="melanoma",
        samples=(
            ("A375_untreated_rep1", "sensitive", 420),
            ("A375_untreated_rep2", "sensitive", 380),
            ("A375_PLX4720_D21_rep1", "resistant", 410),
            ("A375_PLX4720_D21_rep2", "resistant", 390),
        ),
        depth=3400.0,
        strength=0.85,
    ),
    _Spec(
        dataset_id="demo_breast_paclitaxel",
        metadata={
            "drug": "paclitaxel",
            "cancer_type": "breast cancer",
            "tissue": "patient-derived xenograft",
            "therapy": "chemotherapy",
            "regimen": "monotherapy",
        },
        lineage="breast",
        samples=(
            ("PDX1_pretreatment", "sensitive", 430),
            ("PDX2_pretreatment", "sensitive", 400),
            ("PDX1_residual", "resistant", 380),
            ("PDX2_residual", "resistant", 390),
        ),
        depth=1800.0,
        strength=0.7,
    ),
)


@dataclass
class DemoDataset:
    """One synthetic data set, shaped like an ingested study (counts, obs labels, metadata)."""

    dataset_id: str
    adata: anndata.AnnData
    metadata: dict[str, str] = field(default_factory=dict)


def _baseline_log_mean(genes: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """Gene baselines: ribosomal, mitochondrial and housekeeping genes dominate the UMIs."""
    log_mean = rng.normal(-0.5, 1.4, len(genes))
    tiers = (
        (set(_ribosomal()), 3.4, 0.4),
        (set(_mitochondrial()), 3.2, 0.6),
        (set(_HOUSEKEEPING), 3.0, 0.7),
        (set(RESISTANCE_UP) | set(RESISTANCE_DOWN) | set(_CELL_CYCLE), 1.0, 0.5),
    )
    for members, mu, sd in tiers:
        mask = np.fromiter((g in members for g in genes), bool, len(genes))
        log_mean[mask] = rng.normal(mu, sd, mask.sum())
    return log_mean


def _barcodes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unique 16-nt 10x-style cell barcodes (without the sample suffix)."""
    codes = np.unique(rng.integers(0, 4**16, size=n, dtype=np.int64))
    while codes.size < n:
        extra = rng.integers(0, 4**16, size=n - codes.size, dtype=np.int64)
        codes = np.unique(np.concatenate([codes, extra]))
    codes = rng.permutation(codes[:n])
    digits = (codes[:, None] >> (2 * np.arange(15, -1, -1, dtype=np.int64))) & 3
    letters = np.frombuffer(b"ACGT", dtype="S1")[digits]
    return letters.view("S16").ravel().astype(str)


def _simulate(
    spec: _Spec,
    genes: tuple[str, ...],
    base: np.ndarray,
    dispersion: np.ndarray,
    scale: float,
    rng: np.random.Generator,
) -> DemoDataset:
    """One data set; everything gene-level is drawn before anything whose size depends on scale."""
    n_genes = len(genes)
    index = {g: i for i, g in enumerate(genes)}
    n_samples = len(spec.samples)

    # Data-set batch: gene-wise factors plus its own lineage markers.
    log_mu = base + rng.normal(0.0, 0.4, n_genes)
    lineage = [index[g] for g in _LINEAGE[spec.lineage]]
    log_mu[lineage] += 3.0
    # Sample effects: smaller gene-wise factors, and a per-sample depth shift.
    sample_shift = rng.normal(0.0, 0.12, (n_samples, n_genes))
    sample_depth = np.exp(rng.normal(0.0, 0.15, n_samples))
    # The resistance programme: each data set uses most, not all, of the genes.
    programme = np.zeros(n_genes)
    for names, sign in ((RESISTANCE_UP, 1.0), (RESISTANCE_DOWN, -1.0)):
        idx = np.array([index[g] for g in names])
        active = rng.random(idx.size) < 0.8
        programme[idx[active]] = sign * spec.strength * np.abs(rng.normal(1.0, 0.3, active.sum()))
    # Cell states unrelated to the drug: three random programmes and the cell cycle.
    n_states = 3
    state_effect = (rng.random((n_states, n_genes)) < 0.04) * rng.normal(
        0.0, 0.9, (n_states, n_genes)
    )
    cycle_effect = np.zeros(n_genes)
    cycle_effect[[index[g] for g in _CELL_CYCLE]] = 1.5
    # Each data set misses ~5% of the genes (never the programme or lineage genes)
    protected = np.zeros(n_genes, bool)
    protected[[index[g] for g in (*RESISTANCE_UP, *RESISTANCE_DOWN)] + lineage] = True
    keep = protected | (rng.random(n_genes) >= 0.05)
    # and lists them in its own order, so that matching must go by name.
    columns = rng.permutation(np.flatnonzero(keep))

    sizes = np.array([max(10, round(n * scale)) for _, _, n in spec.samples])
    sample_of_cell = np.repeat(np.arange(n_samples), sizes)
    n_cells = int(sizes.sum())
    resistant_cell = np.array([r == "resistant" for _, r, _ in spec.samples])[sample_of_cell]
    # Per-cell programme strength: overlapping distributions, and drug-tolerant
    # persisters among the pre-treatment cells.
    strength = np.where(
        resistant_cell, rng.normal(1.0, 0.5, n_cells), rng.normal(0.0, 0.4, n_cells)
    )
    persister = ~resistant_cell & (rng.random(n_cells) < 0.08)
    strength[persister] = rng.normal(0.9, 0.4, persister.sum())
    state_weight = rng.dirichlet(np.full(n_states, 0.4), n_cells)
    cycling = rng.random(n_cells) < np.where(resistant_cell, 0.15, 0.35)
    library = spec.depth * sample_depth[sample_of_cell] * np.exp(rng.normal(0.0, 0.35, n_cells))

    shape = 1.0 / dispersion[columns]
    blocks = []
    # Cells go in blocks so that memory stays bounded at large `scale`.
    for start in range(0, n_cells, _BLOCK):
        cells = slice(start, min(start + _BLOCK, n_cells))
        log_rate = (
            log_mu[None, :]
            + sample_shift[sample_of_cell[cells]]
            + state_weight[cells] @ state_effect
            + strength[cells, None] * programme[None, :]
            + cycling[cells, None] * cycle_effect[None, :]
        )
        log_rate -= log_rate.max(axis=1, keepdims=True)
        mean = np.exp(log_rate)
        mean = mean[:, columns] * (library[cells] / mean.sum(axis=1))[:, None]
        counts = rng.poisson(rng.gamma(shape[None, :], mean / shape[None, :]))
        blocks.append(sparse.csr_matrix(counts.astype(np.float32)))

    barcodes = np.char.add(_barcodes(n_cells, rng), "-")
    obs = pd.DataFrame(
        {
            "sample": np.array([s for s, _, _ in spec.samples], dtype=object)[sample_of_cell],
            "response": np.where(resistant_cell, "resistant", "sensitive").astype(object),
        },
        # Suffixes -1, -2, ... per sample, as `cellranger aggr` writes them.
        index=pd.Index(np.char.add(barcodes, (sample_of_cell + 1).astype(str)).astype(object)),
    )
    var = pd.DataFrame(index=pd.Index(np.asarray(genes, dtype=object)[columns]))
    return DemoDataset(
        dataset_id=spec.dataset_id,
        adata=anndata.AnnData(X=sparse.vstack(blocks, format="csr"), obs=obs, var=var),
        metadata=dict(spec.metadata),
    )


def generate_demo_datasets(seed: int = 0, scale: float = 1.0) -> list[DemoDataset]:
    """Three synthetic drug-response data sets (~5,000 cells at scale 1); same seed, same bytes.

    `scale` multiplies the number of cells of every sample (at least 10 each);
    the genes, samples and labels do not change with it.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    genes = demo_gene_symbols()
    gene_seed, *dataset_seeds = np.random.SeedSequence(seed).spawn(1 + len(_SPECS))
    gene_rng = np.random.default_rng(gene_seed)
    base = _baseline_log_mean(genes, gene_rng)
    dispersion = np.exp(gene_rng.normal(np.log(0.3), 0.5, len(genes)))
    return [
        _simulate(spec, genes, base, dispersion, scale, np.random.default_rng(ds))
        for spec, ds in zip(_SPECS, dataset_seeds, strict=True)
    ]


def write_demo_files(
    out_dir: Path, seed: int = 0, scale: float = 1.0
) -> list[tuple[Path, DemoDataset]]:
    """Write one `<dataset_id>.h5ad` per data set, so the demo goes through the real ingest path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in generate_demo_datasets(seed=seed, scale=scale):
        path = out_dir / f"{dataset.dataset_id}.h5ad"
        adata = dataset.adata.copy()
        adata.uns["scdrugmap_demo"] = {
            **dataset.metadata,
            "synthetic": True,
            "seed": seed,
            "scale": scale,
        }
        adata.write_h5ad(path)
        written.append((path, dataset))
    return written

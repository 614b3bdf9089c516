"""CellPLM (OmicsML): a cell as a bag of gene vectors, a Flowformer across cells, a GMVAE latent.

What the reference's `CellEmbeddingPipeline` computes (OmicsML/CellPLM):

- **Input.** Raw counts of the genes in the checkpoint's gene list (19,374
  Ensembl IDs), log1p, times the gene embedding table: each cell is the
  weighted sum of its genes' vectors. Then Linear, ReLU and the configured
  norm (GroupNorm with 4 groups for the published model).
- **Encoder.** Flowformer layers (pre-norm, feed-forward twice as wide,
  GELU) whose sequence is the *cells* of a batch: cells attend to each
  other. The reference embeds each obs `batch` (sample) in slices of
  `batch_size` consecutive cells, the whole sample by default. We use blocks
  of `block_size` consecutive cells of one sample (`embed/cell_blocks.py`),
  by default the whole sample, as the reference: attention is linear in
  cells, so a sample costs memory in proportion to its cells (see
  `whole_sample_bound`). Only a sample larger than that memory-derived bound
  is split, into blocks of the bound's size, with a printed note; the block
  size and its reason are part of the embedding's recorded settings.
- **Embedding.** LayerNorm, then the GMVAE inference net in eval mode: a
  hard Gumbel-softmax draw of the cluster and the Gaussian mean given cell
  and cluster (512 dims). The reference draws the Gumbel noise from torch's
  global generator; here it is seeded by the cell's own counts
  (`cell_random`), so a cell gets the same draw in any run or company.
  `cluster=argmax` takes the most probable cluster, without noise.
- **Genes.** Ensembl IDs of the gene list. The reference maps gene symbols
  through mygene.info, online; offline, symbols are mapped through a
  symbol-to-Ensembl dictionary in Geneformer's `gene_name_id_dict.pkl`
  layout, in the checkpoint directory or given as `gene_names=PATH`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from scdrugmap.embed.cell_blocks import DEFINITION
from scdrugmap.embed.cell_random import CellGenes, cell_seeds, keyed_draws
from scdrugmap.embed.panel import GenePanel
from scdrugmap.embed.safe_pickle import load_plain_dictionary
from scdrugmap.embed.torch_embedder import TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import autocast, load_weights, to_device
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

CONFIG_SUFFIX = ".config.json"
WEIGHTS_SUFFIX = ".best.ckpt"
GENE_NAMES = "gene_name_id_dict.pkl"
CLUSTER_CHOICES = ("sample", "argmax")
GROUP_NORM_GROUPS = 4
# The published architecture, with OmicsFormer's defaults for keys a config leaves out.
PUBLISHED_FORM = {
    "enc_mod": ("flowformer", "flowformer"),
    "latent_mod": ("gmvae", "vae"),
    "cat_pe": (False, True),
    "input_covariate": (False, False),
    "dsbn": (False, False),
}
ATTENTION_DROPOUT = 0.01  # fixed in the reference's flow attention, whatever the config
_GUMBEL_STREAM = np.uint64(0xCE11_0001)
# What one cell of a block costs while the block is encoded. Measured on CPU (peak RSS
# over the loaded model) with a published-size model (width 1,024, 4 layers, the 19,374-
# gene list) on real PC9 cells (about 215 genes each) in one block: 0.31 GiB for 8,600
# cells, 0.66 for 17,200, 1.38 for 34,400, 2.85 for 68,800, a straight line of 45 KB a
# cell: about 10 float32 values per unit of width (layer inputs, queries, keys, values,
# the feed-forward's doubled width) plus the sparse input, 20 bytes per expressed gene
# (int64 row and column, float32 value). The bound takes 12 values, and TYPICAL_GENES
# genes, a full 10x cell: about 78,700 cells at the published width.
ACTIVATION_FLOATS = 12
TYPICAL_GENES = 3000
BLOCK_MEMORY = 8 * 2**30  # a block's working memory: fits a 16 GB GPU beside the model
_EPS = 1e-20


@dataclass(frozen=True)
class CellPLMBatch:
    """log1p counts on the gene list, each cell's block, and its Gumbel uniforms."""

    values: sparse.csr_matrix
    blocks: np.ndarray
    uniforms: np.ndarray


class CellPLMTokenizer:
    def __init__(
        self, genes: list[str], names: dict, clusters: int, block_size: int, seed: int
    ) -> None:
        self.panel = GenePanel(genes)
        self.names = {k: v for k, v in names.items() if v in self.panel.index}
        self.clusters = clusters
        self.block_size = block_size
        self.seed = seed
        self._cache: tuple[tuple[str, ...], list[str]] | None = None

    def ensembl_ids(self, genes: Sequence[str]) -> list[str]:
        """Data columns as gene-list IDs: an ID as it is, a symbol through the dictionary."""
        key = tuple(genes)
        if self._cache is None or self._cache[0] != key:
            index = self.panel.index
            self._cache = (key, [g if g in index else self.names.get(g, "") for g in key])
        return self._cache[1]

    def __call__(
        self, counts: sparse.csr_matrix, genes: Sequence[str], blocks: np.ndarray | None = None
    ) -> CellPLMBatch:
        on_list = self.panel.project(counts, self.ensembl_ids(genes), np.float32)
        on_list.data = np.log1p(on_list.data)
        if blocks is None:
            blocks = np.arange(on_list.shape[0]) // self.block_size
        if len(blocks) != on_list.shape[0]:
            raise InputError(f"cellplm: {len(blocks)} block numbers for {on_list.shape[0]} cells")
        return CellPLMBatch(on_list, np.asarray(blocks, dtype=np.int64), self._uniforms(on_list))

    def _uniforms(self, on_list: sparse.csr_matrix) -> np.ndarray:
        """(cells, clusters) float32 uniforms in [0, 1), as torch.rand draws them (24 bits)."""
        per_cell = np.diff(on_list.indptr)
        genes = CellGenes(
            on_list.indices, on_list.data, np.repeat(np.arange(len(per_cell)), per_cell), per_cell
        )
        seeds = cell_seeds(genes, self.seed)
        bits = keyed_draws(seeds[:, None], np.arange(self.clusters)[None, :], _GUMBEL_STREAM)
        return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


class GeneBag(nn.Module):
    def __init__(self, genes: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Parameter(torch.zeros(genes, dim))


class CellInput(nn.Module):
    """The reference's `OmicsEmbeddingLayer` with its positional term (zero for
    non-spatial data) left out."""

    def __init__(self, genes: int, dim: int, norm: nn.Module, dropout: float) -> None:
        super().__init__()
        self.feat_enc = GeneBag(genes, dim)
        self.extra_linear = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), norm)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        # Sparse products have no reduced-precision kernels: this one stays float32.
        with torch.autocast(values.device.type, enabled=False):
            bag = torch.sparse.mm(values, self.feat_enc.emb)
        return self.extra_linear(bag)


class FlowAttention(nn.Module):
    """Flow attention (Flowformer) over one sequence: sigmoid features, flow conservation
    on the sink and source sides, competition by a softmax over the sequence."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.eps = eps
        self.query_projection = nn.Linear(dim, dim)
        self.key_projection = nn.Linear(dim, dim)
        self.value_projection = nn.Linear(dim, dim)
        self.out_projection = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(ATTENTION_DROPOUT)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], self.heads, -1).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps
        q = torch.sigmoid(self._split(self.query_projection(x)))
        k = torch.sigmoid(self._split(self.key_projection(x)))
        v = self._split(self.value_projection(x))
        incoming = 1.0 / torch.einsum("hld,hd->hl", q + eps, k.sum(1) + eps)
        outgoing = 1.0 / torch.einsum("hld,hd->hl", k + eps, q.sum(1) + eps)
        conserved_sink = torch.einsum("hld,hd->hl", q + eps, (k * outgoing[..., None]).sum(1) + eps)
        conserved_source = torch.einsum(
            "hld,hd->hl", k + eps, (q * incoming[..., None]).sum(1) + eps
        ).clamp(-1.0, 1.0)
        allocation = torch.sigmoid(conserved_sink)
        competition = torch.softmax(conserved_source, dim=-1) * float(x.shape[0])
        kv = torch.einsum("hld,hlm->hdm", k, v * competition[..., None])
        mixed = torch.einsum("hld,hdm->hlm", q * incoming[..., None], kv) * allocation[..., None]
        return self.dropout(self.out_projection(mixed.transpose(0, 1).reshape(x.shape[0], -1)))


class FlowformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = FlowAttention(dim, heads)
        self._ff_block = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout1(self.self_attn(self.norm1(x)))
        return x + self._ff_block(self.norm2(x))


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FlowformerLayer(dim, heads, hidden, dropout) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class PreLatentNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class ClusterLogits(nn.Module):
    def __init__(self, dim: int, clusters: int) -> None:
        super().__init__()
        self.logits = nn.Linear(dim, clusters)


class GaussianMean(nn.Module):
    def __init__(self, hidden: int, latent: int) -> None:
        super().__init__()
        self.mu = nn.Linear(hidden, latent)


class InferenceNet(nn.Module):
    """q(y|x) and the mean of q(z|x,y); the variance and prior heads play no part here."""

    def __init__(self, dim: int, clusters: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.inference_qyx = nn.ModuleList([ClusterLogits(dim, clusters)])
        self.inference_qzyx = nn.ModuleList(
            [nn.Linear(dim + clusters, hidden), nn.ReLU(), GaussianMean(hidden, latent)]
        )

    def forward(self, h: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
        logits = self.inference_qyx[0].logits(h)
        if uniforms is None:
            cluster = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(h.dtype)
        else:
            gumbel = -torch.log(-torch.log(uniforms + _EPS) + _EPS)
            soft = torch.softmax(logits + gumbel, dim=-1)
            hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
            cluster = (hard - soft).detach() + soft  # straight through, as the reference
        first, activation, gaussian = self.inference_qzyx
        return gaussian.mu(activation(first(torch.cat((h, cluster), dim=1))))


class GMVAELatent(nn.Module):
    def __init__(self, dim: int, clusters: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.inference = InferenceNet(dim, clusters, hidden, latent)


class Latent(nn.Module):
    """The reference's latent stack: a parameterless placeholder, then the GMVAE layer."""

    def __init__(self, dim: int, clusters: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Identity(), GMVAELatent(dim, clusters, hidden, latent)])


class CellPLMModel(nn.Module):
    """OmicsFormer's path to the cell embedding, under the published state-dict names."""

    def __init__(self, shapes: dict, heads: int, norm: str, dropout: float) -> None:
        super().__init__()
        dim = shapes["dim"]
        norm_layer = nn.GroupNorm(GROUP_NORM_GROUPS, dim) if norm == "groupnorm" else None
        self.embedder = CellInput(shapes["genes"], dim, norm_layer or nn.LayerNorm(dim), dropout)
        self.encoder = Encoder(dim, heads, shapes["ff_hidden"], shapes["depth"], dropout)
        self.pre_latent_norm = PreLatentNorm(dim)
        self.latent = Latent(dim, shapes["clusters"], shapes["latent_hidden"], shapes["latent"])

    def forward(self, values: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
        """One attention group of cells (a block) to their embeddings."""
        hidden = self.pre_latent_norm.norm(self.encoder(self.embedder(values)))
        return self.latent.layers[1].inference(hidden, uniforms)


def whole_sample_bound(width: int) -> int:
    """The most cells encoded as one block by default: BLOCK_MEMORY over a cell's cost."""
    per_cell = 4 * ACTIVATION_FLOATS * width + 20 * TYPICAL_GENES
    return max(1, BLOCK_MEMORY // per_cell)


def _version_files(folder: Path, version: str | None) -> tuple[Path, Path]:
    """`<version>.config.json` and `<version>.best.ckpt`; the version may be left out when the
    directory holds one."""
    if version is None:
        versions = sorted(
            p.name.removesuffix(CONFIG_SUFFIX)
            for p in folder.glob(f"*{CONFIG_SUFFIX}")
            if (folder / (p.name.removesuffix(CONFIG_SUFFIX) + WEIGHTS_SUFFIX)).is_file()
        )
        if len(versions) != 1:
            found = ", ".join(versions) or "none"
            raise InputError(
                f"{folder}: cellplm needs one <version>{CONFIG_SUFFIX} with its "
                f"<version>{WEIGHTS_SUFFIX} (found: {found}); pass --param version=NAME"
            )
        version = versions[0]
    paths = folder / f"{version}{CONFIG_SUFFIX}", folder / f"{version}{WEIGHTS_SUFFIX}"
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: missing; CellPLM publishes both files of a version")
    return paths


def read_config(path: Path) -> dict:
    """The published config, refused when it describes another architecture than the
    released one (the only one this reader implements)."""
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error})") from error
    if not isinstance(config, dict) or not isinstance(config.get("gene_list"), list):
        raise InputError(f"{path}: holds no gene_list")
    for key, (wanted, default) in PUBLISHED_FORM.items():
        if config.get(key, default) != wanted:
            raise InputError(
                f"{path}: {key}={config.get(key, default)!r}; only the published CellPLM "
                f"({key}={wanted!r}) is supported"
            )
    if config.get("norm", "layernorm") not in ("groupnorm", "layernorm"):
        raise InputError(f"{path}: norm {config['norm']!r} is not supported")
    return config


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    saved = load_weights(path)
    state = saved.get("model_state_dict") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds no model_state_dict")
    return state


def _shapes(state: dict[str, torch.Tensor], path: Path) -> dict:
    prefix = "latent.layers.1.inference."
    try:
        genes, dim = state["embedder.feat_enc.emb"].shape
        return {
            "genes": genes,
            "dim": dim,
            "depth": len({k.split(".")[2] for k in state if k.startswith("encoder.layers.")}),
            "ff_hidden": state["encoder.layers.0._ff_block.0.weight"].shape[0],
            "clusters": state[prefix + "inference_qyx.0.logits.weight"].shape[0],
            "latent_hidden": state[prefix + "inference_qzyx.0.weight"].shape[0],
            "latent": state[prefix + "inference_qzyx.2.mu.weight"].shape[0],
        }
    except KeyError as error:
        raise InputError(f"{path}: no {error.args[0]} in model_state_dict; not CellPLM") from None


def build_model(config: dict, path: Path, heads: int) -> CellPLMModel:
    state = _read_state(path)
    shapes = _shapes(state, path)
    if shapes["genes"] != len(config["gene_list"]):
        raise InputError(
            f"{path}: {shapes['genes']} gene vectors, but its config lists "
            f"{len(config['gene_list'])} genes"
        )
    if shapes["dim"] % heads:
        raise InputError(f"cellplm: width {shapes['dim']} does not split into {heads} heads")
    dropout = float(config.get("model_dropout", 0.1))
    model = CellPLMModel(shapes, heads, config.get("norm", "layernorm"), dropout)
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing[:3])}; not a CellPLM checkpoint")
    try:
        model.load_state_dict({k: state[k] for k in wanted})
    except RuntimeError as error:
        raise InputError(f"{path}: shapes do not fit ({str(error).splitlines()[-1]})") from error
    return model.eval()


class CellPLMEmbedder(TorchEmbedder):
    """CellPLM cell embeddings, each block of cells encoded together (see the module docstring).

    Options: `block_size` (cells that attend to each other; by default whole
    samples, split only past `whole_sample_bound`, with a note), `cluster`
    (sample: the reference's seeded Gumbel draw; argmax), `seed` (mixed into
    the per-cell draws), `heads` (the config's `enc_head`, else the
    reference's 8), `version` (which
    `<version>.config.json` when the directory holds several), `gene_names`
    (symbol-to-Ensembl dictionary), `precision` (autocast on CUDA).
    """

    name = "cellplm"
    _capped_noted = False
    lora_targets: ClassVar[list[str]] = ["query_projection", "key_projection", "value_projection"]
    gene_id_hint = "cellplm needs Ensembl IDs, or symbols through gene_name_id_dict.pkl"

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> CellPLMEmbedder:
        folder = Path(checkpoint)
        config_path, weights_path = _version_files(folder, options.pop("version", None))
        names_path = Path(options.pop("gene_names", folder / GENE_NAMES))
        config = read_config(config_path)
        defaults = {
            "block_size": None,
            "cluster": "sample",
            "seed": 0,
            "heads": config.get("enc_head", 8),
            "precision": "float32",
        }
        settings, batching = split_options("cellplm", options, defaults, {})
        settings = _checked(settings)
        model = build_model(config, weights_path, settings["heads"])
        settings |= _block_setting(settings["block_size"], model)
        names = load_plain_dictionary(names_path) if names_path.is_file() else {}
        settings.update(
            version=config_path.name.removesuffix(CONFIG_SUFFIX),
            gene_list_size=len(config["gene_list"]),
            gene_names_sha256=file_sha256(names_path) if names else None,
            cell_blocks=DEFINITION,
        )
        clusters = model.latent.layers[1].inference.inference_qyx[0].logits.out_features
        tokenizer = CellPLMTokenizer(
            config["gene_list"], names, clusters, settings["block_size"], settings["seed"]
        )
        return cls(
            model,
            tokenizer,
            device,
            settings,
            batching,
            file_sha256(weights_path),
            dim=model.latent.layers[1].inference.inference_qzyx[2].mu.out_features,
        )

    @property
    def block_size(self) -> int:
        return self.settings["block_size"]

    def _note_cap(self, blocks: np.ndarray) -> None:
        """Once per embedder: a block filled to the memory bound means a sample larger than
        it is split, which the reference would have encoded whole."""
        if self._capped_noted or self.settings["block_size_reason"] != _BOUND_REASON:
            return
        if len(blocks) and np.bincount(blocks).max() >= self.block_size:
            self._capped_noted = True
            warnings.warn(
                f"cellplm: a sample has more cells than the memory bound of {self.block_size}; "
                f"it is split into blocks of {self.block_size} consecutive cells (recorded "
                "as block_size), where the reference encodes each sample whole. "
                "--param block_size=N sets it.",
                UserWarning,
                stacklevel=3,
            )

    def gene_vocabulary(self) -> set[str]:
        return set(self.tokenizer.panel.index) | set(self.tokenizer.names)

    def tokenize(
        self, counts: sparse.csr_matrix, genes: Sequence[str], blocks: np.ndarray | None = None
    ) -> CellPLMBatch:
        return self.tokenizer(counts, genes, blocks)

    @torch.inference_mode()
    def embed(self, batch: CellPLMBatch) -> np.ndarray:
        """Each block encoded on its own; rows in input order."""
        self._note_cap(batch.blocks)
        out = np.zeros((len(batch.blocks), self.dim), dtype=np.float32)
        order = np.argsort(batch.blocks, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(batch.blocks[order]) != 0])
        for cells in np.split(order, starts[1:]):
            if len(cells):
                out[cells] = self.encode(batch, cells).cpu().numpy()
        return out

    def encode(self, batch: CellPLMBatch, cells: np.ndarray) -> torch.Tensor:
        """The chosen cells, encoded as one group that attends to itself: pass whole blocks."""
        part = batch.values[cells]
        rows = np.repeat(np.arange(part.shape[0]), np.diff(part.indptr))
        values = torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack((rows, part.indices)).astype(np.int64)),
            torch.from_numpy(part.data),
            size=part.shape,
            is_coalesced=True,
            check_invariants=False,
        ).to(self.device)
        uniforms = None
        if self.settings["cluster"] == "sample":
            uniforms = to_device(batch.uniforms[cells], self.device)
        with autocast(self.device, self.settings["precision"]):
            return self.model(values, uniforms).float()


_BOUND_REASON = "whole samples up to the memory bound"


def _block_setting(block_size, model: CellPLMModel) -> dict:
    """`block_size` and why: the user's, or whole samples up to the memory bound."""
    if block_size is not None:
        return {"block_size": block_size, "block_size_reason": "set by the block_size option"}
    width = model.embedder.feat_enc.emb.shape[1]
    return {"block_size": whole_sample_bound(width), "block_size_reason": _BOUND_REASON}


def _checked(settings: dict) -> dict:
    ints = ("seed", "heads") if settings["block_size"] is None else ("block_size", "seed", "heads")
    checked = {**settings, **{k: int(settings[k]) for k in ints}}
    if checked["cluster"] not in CLUSTER_CHOICES:
        raise InputError(f"cellplm: cluster must be one of {', '.join(CLUSTER_CHOICES)}")
    if (checked["block_size"] or 1) < 1 or checked["heads"] < 1:
        raise InputError("cellplm: block_size and heads must be positive")
    autocast(torch.device("cpu"), checked["precision"])
    return checked

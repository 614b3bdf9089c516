"""Model names to embedder classes, imported only when used, and what each checkpoint holds.

Importing a foundation model pulls in torch; listing models or running a CPU
classifier must not, so the registry holds import paths, not classes. It also
knows each model's published files, so that a missing file is reported, with
where the authors publish it, before any data is read or weights loaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from scdrugmap.errors import InputError


@dataclass(frozen=True)
class FileRule:
    """One thing a checkpoint directory holds: any one of `names` (glob patterns).

    `option` names the `--param` that may point at the file elsewhere instead.
    """

    names: tuple[str, ...]
    optional: bool = False
    option: str | None = None

    def describe(self) -> str:
        text = " or ".join(self.names)
        return f"[{text}]" if self.optional else text

    def found_in(self, folder: Path) -> bool:
        return any(next(folder.glob(name), None) is not None for name in self.names)


def _files(
    *rules: str | tuple[str, ...] | FileRule, optional: tuple[str, ...] = ()
) -> tuple[FileRule, ...]:
    required = tuple(
        r if isinstance(r, FileRule) else FileRule(r if isinstance(r, tuple) else (r,))
        for r in rules
    )
    return required + tuple(FileRule((name,), optional=True) for name in optional)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    target: str
    description: str
    dim: str
    gene_ids: str
    max_length: str
    files: tuple[FileRule, ...]
    source: str
    fitted_in_store: bool = False
    # The authors' data-set filter and its default here (`embed/cell_filters.py`).
    cell_filter: str = "none"

    @property
    def checkpoint_files(self) -> tuple[str, ...]:
        return tuple(rule.describe() for rule in self.files)

    def load_class(self) -> type:
        module_name, class_name = self.target.split(":")
        return getattr(importlib.import_module(module_name), class_name)

    def missing_files(self, folder: Path, options: dict | None = None) -> list[str]:
        """Required files absent from `folder` and not given elsewhere by their option."""
        given = options or {}
        return [
            r.describe()
            for r in self.files
            if not r.optional and r.option not in given and not r.found_in(folder)
        ]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "pca",
            "scdrugmap.embed.baselines.pca:PCAEmbedder",
            "baseline: log1p-CP10k, highly variable genes, scaled, PCA (50 components)",
            "50",
            "any (matched by name across data sets)",
            "all genes",
            (),
            "fitted on the store's own cells",
            fitted_in_store=True,
        ),
        ModelSpec(
            "hvg",
            "scdrugmap.embed.baselines.hvg:HVGEmbedder",
            "baseline: log1p-CP10k expression of the top highly variable genes (1,000)",
            "1000",
            "any (matched by name across data sets)",
            "all genes",
            (),
            "fitted on the store's own cells",
            fitted_in_store=True,
        ),
        ModelSpec(
            "geneformer",
            "scdrugmap.embed.models.geneformer:GeneformerEmbedder",
            "Geneformer (V1, V2): rank-value encoding, BERT; mean of the penultimate layer",
            "256 (V1 6-layer), 512 (V1 12-layer), 768 / 1152 (V2)",
            "Ensembl IDs, or symbols through gene_name_id_dict.pkl",
            "2048 (V1), 4096 (V2)",
            _files(
                "config.json",
                ("model.safetensors", "pytorch_model.bin"),
                FileRule(("token_dictionary.pkl",), option="token_dictionary"),
                FileRule(("gene_median_dictionary.pkl",), option="gene_median_dictionary"),
                optional=("gene_name_id_dict.pkl",),
            ),
            "https://huggingface.co/ctheodoris/Geneformer",
        ),
        ModelSpec(
            "scgpt",
            "scdrugmap.embed.models.scgpt:ScGPTEmbedder",
            "scGPT (scGPT_human and organ models): binned values, <cls> output, L2-normalised",
            "512",
            "gene symbols (CELLxGENE census vocabulary)",
            "1200 (max_length)",
            _files("best_model.pt", "vocab.json", "args.json"),
            "https://github.com/bowang-lab/scGPT#pretrained-scgpt-model-zoo",
        ),
        ModelSpec(
            "tgpt",
            "scdrugmap.embed.models.tgpt:TGPTEmbedder",
            "tGPT: gene-symbol sentences ranked by expression, GPT-2; mean of last hidden states",
            "1024",
            "gene symbols",
            "64 (transcriptome-gpt-1024-8-16-64)",
            _files("config.json", ("model.safetensors", "pytorch_model.bin"), "tokenizer.json"),
            "https://huggingface.co/lixiangchun/transcriptome-gpt-1024-8-16-64",
        ),
        ModelSpec(
            "text",
            "scdrugmap.embed.models.text:TextEmbedder",
            "cells as text (top expressed gene symbols) through any local Hugging Face model",
            "the model's hidden size (384 for all-MiniLM-L6-v2)",
            "gene symbols",
            "the model's (top_n genes)",
            _files(
                "config.json",
                ("model.safetensors", "pytorch_model.bin", "model-*.safetensors"),
                ("tokenizer.json", "tokenizer_config.json", "vocab.txt"),
                optional=("modules.json",),
            ),
            "any Hugging Face model directory, e.g. https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        ),
        ModelSpec(
            "scfoundation",
            "scdrugmap.embed.models.scfoundation:ScFoundationEmbedder",
            "scFoundation: 19,264-gene panel with total-count tokens; S, T, max and mean pooled",
            "3072 (100M model; 768 with pool_type=max)",
            "gene symbols (19,264-gene panel)",
            "expressed panel genes + 2 count tokens",
            _files(
                "models.ckpt",
                FileRule(("OS_scRNA_gene_index.19264.tsv",), option="gene_index"),
            ),
            "https://github.com/biomap-research/scFoundation (models.ckpt via its README link)",
        ),
        ModelSpec(
            "uce",
            "scdrugmap.embed.models.uce:UCEEmbedder",
            "UCE: genes sampled by expression, in genome order, as ESM2 proteins; CLS output",
            "1280",
            "gene symbols with ESM2 protein embeddings",
            "1536 (1,024 sampled genes + chromosome tokens)",
            _files(
                FileRule(("4layer_model.torch", "33l_8ep_1024t_1280.torch"), option="model_file"),
                "all_tokens.torch",
                "species_chrom.csv",
                "species_offsets.pkl",
                "protein_embeddings/*ESM2.pt",
            ),
            "https://figshare.com/articles/dataset/Universal_Cell_Embedding_Model_Files/24320806"
            " (snap-stanford/UCE README)",
            cell_filter="on, as the authors: genes in < 10 cells dropped, cells with < 25 genes "
            "left out (--param filter=false)",
        ),
        ModelSpec(
            "scbert",
            "scdrugmap.embed.models.scbert:ScBERTEmbedder",
            "scBERT: binned log2-normalised panel expression through a Performer; mean pooled",
            "200",
            "gene symbols (16,906-gene PanglaoDB panel)",
            "16907 (panel + 1, every cell)",
            _files(
                "panglao_pretrain.pth",
                "gene2vec_16906.npy",
                FileRule(("gene_panel.txt", "panglao_10000.h5ad"), option="gene_panel"),
            ),
            "https://github.com/TencentAILabHealthcare/scBERT (checkpoint and data via its README)",
            cell_filter="on, as the authors: cells with < 200 panel genes left out "
            "(--param min_genes=0)",
        ),
        ModelSpec(
            "cellplm",
            "scdrugmap.embed.models.cellplm:CellPLMEmbedder",
            "CellPLM: log counts as bags of gene vectors; Flowformer across cell blocks; GMVAE",
            "512",
            "Ensembl IDs (19,374-gene list), or symbols through gene_name_id_dict.pkl",
            "all listed genes; a sample's cells attend together (whole samples, split past "
            "a memory bound of about 78,700 cells at the published width)",
            _files(
                "*.best.ckpt",
                "*.config.json",
                FileRule(("gene_name_id_dict.pkl",), optional=True, option="gene_names"),
            ),
            "https://www.dropbox.com/scl/fo/i5rmxgtqzg7iykt2e9uqm/h?rlkey=o8hi0xads9ol07o48jdityzv1"
            " (OmicsML/CellPLM README)",
        ),
        ModelSpec(
            "celllm",
            "scdrugmap.embed.models.celllm:CellLMEmbedder",
            "CellLM (OpenBioMed): expressed genes as binned tokens at gene2vec positions",
            "512",
            "gene symbols (19,379-gene panel)",
            "6000 (CLS + expressed genes, padded)",
            _files(
                "checkpoint4_fixed.pth",
                "gene2vec_19379_512.npy",
                FileRule(("gene_panel.txt",), option="gene_panel"),
            ),
            "https://github.com/PharMolix/OpenBioMed (CellLM checkpoint via its README)",
        ),
    )
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None

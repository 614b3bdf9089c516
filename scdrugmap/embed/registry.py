"""Model names to embedder classes, imported only when used.

Importing a foundation model pulls in torch; listing models or running a CPU
classifier must not, so the registry holds import paths, not classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from scdrugmap.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    target: str
    description: str
    checkpoint_files: tuple[str, ...]
    fitted_in_store: bool

    def load_class(self) -> type:
        module_name, class_name = self.target.split(":")
        return getattr(importlib.import_module(module_name), class_name)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "pca",
            "scdrugmap.embed.baselines.pca:PCAEmbedder",
            "baseline: log1p-CP10k, highly variable genes, scaled, PCA (50 components)",
            (),
            True,
        ),
        ModelSpec(
            "geneformer",
            "scdrugmap.embed.models.geneformer:GeneformerEmbedder",
            "Geneformer (V1, V2): rank-value encoding, BERT; mean of the penultimate layer",
            (
                "config.json",
                "pytorch_model.bin | model.safetensors",
                "token_dictionary.pkl",
                "gene_median_dictionary.pkl",
                "[gene_name_id_dict.pkl]",
            ),
            False,
        ),
        ModelSpec(
            "scgpt",
            "scdrugmap.embed.models.scgpt:ScGPTEmbedder",
            "scGPT (scGPT_human and organ models): binned values, <cls> output, L2-normalised",
            ("best_model.pt", "vocab.json", "args.json"),
            False,
        ),
        ModelSpec(
            "tgpt",
            "scdrugmap.embed.models.tgpt:TGPTEmbedder",
            "tGPT: gene-symbol sentences ranked by expression, GPT-2; mean of last hidden states",
            ("config.json", "pytorch_model.bin | model.safetensors", "tokenizer.json"),
            False,
        ),
        ModelSpec(
            "text",
            "scdrugmap.embed.models.text:TextEmbedder",
            "cells as text (top expressed gene symbols) through any local Hugging Face model",
            ("config.json", "model weights", "tokenizer files", "[modules.json + pooling]"),
            False,
        ),
        ModelSpec(
            "scfoundation",
            "scdrugmap.embed.models.scfoundation:ScFoundationEmbedder",
            "scFoundation: 19,264-gene panel with total-count tokens; pooled cell embedding",
            ("models.ckpt", "OS_scRNA_gene_index.19264.tsv"),
            False,
        ),
        ModelSpec(
            "uce",
            "scdrugmap.embed.models.uce:UCEEmbedder",
            "UCE: expression-weighted gene samples as protein embeddings by chromosome; CLS",
            (
                "model file (4-layer or 33-layer)",
                "all_tokens.torch",
                "species_chrom.csv",
                "species_offsets.pkl",
                "protein_embeddings/",
            ),
            False,
        ),
        ModelSpec(
            "scbert",
            "scdrugmap.embed.models.scbert:ScBERTEmbedder",
            "scBERT: binned log-normalised panel expression through a Performer",
            ("panglao_pretrain.pth", "gene2vec_16906.npy", "gene panel"),
            False,
        ),
        ModelSpec(
            "hvg",
            "scdrugmap.embed.baselines.hvg:HVGEmbedder",
            "baseline: log1p-CP10k expression of the top highly variable genes (1,000)",
            (),
            True,
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

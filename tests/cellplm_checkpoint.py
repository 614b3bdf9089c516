"""A small random CellPLM checkpoint in the published layout, for tests and benchmarks.

CellPLM publishes `<version>.config.json` (the real one, with its 19,374
Ensembl IDs, is in tests/data/vocab/cellplm) and `<version>.best.ckpt`, a
dict whose `model_state_dict` is the pre-trained OmicsFormer. Here the
config is the real one with a narrow network, and the state dict carries
OmicsFormer's key names and shapes, written out below from the reference
layout (not from our model), including parts the embedding does not use:
the unused norm, the positional tables, the variance and prior heads and
the first decoder layer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

VERSION = "20230926_85M"
SMALL = {"enc_hid": 32, "enc_layers": 2, "post_latent_dim": 16, "num_clusters": 16}
PUBLISHED = {"enc_hid": 1024, "enc_layers": 4, "post_latent_dim": 512, "num_clusters": 16}
LATENT_HIDDEN = 512  # fixed in the reference's inference net
POSITIONS = 100 * 100  # the sinusoidal table's grid


def published_shapes(genes: int, hid: int, layers: int, latent: int, clusters: int) -> dict:
    """OmicsFormer's pre-training state dict: key -> shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "embedder.norm0.weight": (hid,),
        "embedder.norm0.bias": (hid,),
        "embedder.extra_linear.0.weight": (hid, hid),
        "embedder.extra_linear.0.bias": (hid,),
        "embedder.extra_linear.3.weight": (hid,),
        "embedder.extra_linear.3.bias": (hid,),
        "embedder.pe_enc.missing_pe": (hid,),
        "embedder.pe_enc.pe_enc.weight": (POSITIONS, hid),
        "embedder.feat_enc.emb": (genes, hid),
    }
    for i in range(layers):
        layer = f"encoder.layers.{i}."
        for name in ("query", "key", "value", "out"):
            shapes[f"{layer}self_attn.{name}_projection.weight"] = (hid, hid)
            shapes[f"{layer}self_attn.{name}_projection.bias"] = (hid,)
        shapes[f"{layer}_ff_block.0.weight"] = (2 * hid, hid)
        shapes[f"{layer}_ff_block.0.bias"] = (2 * hid,)
        shapes[f"{layer}_ff_block.3.weight"] = (hid, 2 * hid)
        shapes[f"{layer}_ff_block.3.bias"] = (hid,)
        for norm in ("norm1", "norm2"):
            shapes[f"{layer}{norm}.weight"] = (hid,)
            shapes[f"{layer}{norm}.bias"] = (hid,)
    inference = "latent.layers.1.inference."
    shapes |= {
        "pre_latent_norm.norm.weight": (hid,),
        "pre_latent_norm.norm.bias": (hid,),
        inference + "inference_qyx.0.logits.weight": (clusters, hid),
        inference + "inference_qyx.0.logits.bias": (clusters,),
        inference + "inference_qzyx.0.weight": (LATENT_HIDDEN, hid + clusters),
        inference + "inference_qzyx.0.bias": (LATENT_HIDDEN,),
        inference + "inference_qzyx.2.mu.weight": (latent, LATENT_HIDDEN),
        inference + "inference_qzyx.2.mu.bias": (latent,),
        inference + "inference_qzyx.2.var.weight": (latent, LATENT_HIDDEN),
        inference + "inference_qzyx.2.var.bias": (latent,),
        inference + "y_mu.weight": (latent, clusters),
        inference + "y_mu.bias": (latent,),
        inference + "y_var.weight": (latent, clusters),
        inference + "y_var.bias": (latent,),
        "decoder.layers.0.0.weight": (hid, latent),
        "decoder.layers.0.0.bias": (hid,),
        "decoder.layers.0.1.weight": (1,),
    }
    return shapes


def random_state(shapes: dict, seed: int) -> dict[str, torch.Tensor]:
    """Weights at a scale that keeps cells apart: norms near 1, the rest near 0."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        is_norm_scale = key.endswith(".weight") and "norm" in key and len(shape) == 1
        fan_in = shape[1] if len(shape) == 2 else 1
        state[key] = 1 + 0.1 * noise if is_norm_scale else noise / fan_in**0.5
    state["embedder.feat_enc.emb"] *= 0.3
    return state


def write_cellplm_checkpoint(
    folder: Path,
    real_data: Path,
    seed: int = 0,
    version: str = VERSION,
    names: bool = True,
    widths: dict = SMALL,
) -> Path:
    """The real config with `widths` (narrow by default), random weights; Geneformer's
    symbol map when `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((real_data / "vocab" / "cellplm" / f"{VERSION}.config.json").read_text())
    config |= widths
    (folder / f"{version}.config.json").write_text(json.dumps(config))
    shapes = published_shapes(
        len(config["gene_list"]),
        widths["enc_hid"],
        widths["enc_layers"],
        widths["post_latent_dim"],
        widths["num_clusters"],
    )
    state = random_state(shapes, seed)
    torch.save({"model_state_dict": state}, folder / f"{version}.best.ckpt")
    if names:
        symbols = real_data / "vocab" / "geneformer_v1" / "gene_name_id_dict.pkl"
        shutil.copy(symbols, folder / "gene_name_id_dict.pkl")
    return folder

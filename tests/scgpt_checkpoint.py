"""A small random scGPT checkpoint in the published layout, for tests and benchmarks.

The directory holds what the authors publish: `best_model.pt` (the whole
TransformerModel's state dict, decoders included, in the flash-attention
layout with fused `Wqkv`, or PyTorch's `in_proj_*` layout), `vocab.json`
(the census vocabulary plus `<pad>`, `<cls>`, `<eoc>`) and `args.json` with
the published keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scdrugmap.embed.models.scgpt import SPECIAL_TOKENS, ScGPTModel

SMALL_ARGS = {"embsize": 32, "nheads": 4, "d_hid": 64, "nlayers": 2, "n_layers_cls": 3}
PUBLISHED_ARGS = {
    "input_style": "binned",
    "input_emb_style": "continuous",
    "n_bins": 51,
    "max_seq_len": 1200,
    "fast_transformer": True,
    "dropout": 0.2,
    "pad_token": "<pad>",
    "mask_value": -1,
    "pad_value": -2,
    "MVC": True,
}


def _decoder_tensors(width: int, n_layers_cls: int) -> dict[str, torch.Tensor]:
    """The expression, classifier and MVC decoders' parameters: present in the file, unused."""
    tensors = {}
    for index, (rows, cols) in zip((0, 2, 4), ((width, width), (width, width), (1, width))):
        tensors[f"decoder.fc.{index}.weight"] = torch.randn(rows, cols)
        tensors[f"decoder.fc.{index}.bias"] = torch.randn(rows)
    for block in range(n_layers_cls - 1):
        tensors[f"cls_decoder._decoder.{3 * block}.weight"] = torch.randn(width, width)
        tensors[f"cls_decoder._decoder.{3 * block}.bias"] = torch.randn(width)
        tensors[f"cls_decoder._decoder.{3 * block + 2}.weight"] = torch.ones(width)
        tensors[f"cls_decoder._decoder.{3 * block + 2}.bias"] = torch.zeros(width)
    tensors["cls_decoder.out_layer.weight"] = torch.randn(1, width)
    tensors["cls_decoder.out_layer.bias"] = torch.randn(1)
    tensors["mvc_decoder.gene2query.weight"] = torch.randn(width, width)
    tensors["mvc_decoder.gene2query.bias"] = torch.randn(width)
    tensors["mvc_decoder.W.weight"] = torch.randn(width, width)
    return tensors


def write_scgpt_checkpoint(
    folder: Path, census_vocab: Path, flash_layout: bool = True, seed: int = 0, **args
) -> Path:
    """Random weights (non-trivial biases and norms, so no parameter hides a loading bug)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = json.loads(census_vocab.read_text())
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    settings = {**PUBLISHED_ARGS, **SMALL_ARGS, **args}
    (folder / "args.json").write_text(json.dumps(settings, indent=2))
    torch.manual_seed(seed)
    model = ScGPTModel(len(vocab), vocab["<pad>"], settings)
    state = {}
    for key, tensor in model.state_dict().items():
        noisy = tensor + 0.1 * torch.randn_like(tensor)
        if flash_layout:
            key = key.replace("self_attn.in_proj_weight", "self_attn.Wqkv.weight")
            key = key.replace("self_attn.in_proj_bias", "self_attn.Wqkv.bias")
        state[key] = noisy
    state.update(_decoder_tensors(settings["embsize"], settings["n_layers_cls"]))
    torch.save(state, folder / "best_model.pt")
    return folder

"""A small random scFoundation `models.ckpt` in the published layout, for tests and benchmarks.

The published file holds one entry per model (`gene`, `cell`, `rde`), each
with its `config` (`model`, `model_config.mae_autobin`,
`dataset_config.rnaseq`) and a Lightning `state_dict` whose keys start with
`model.`. The published decoders are Performers; the decoder here is a small
PyTorch transformer (the reference supports both), since scdrugmap never
reads the decoder and the reference needs one it can build to load the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from scdrugmap.embed.models.scfoundation import Encoder, ScFoundationModel

SMALL = {"hidden_dim": 32, "depth": 2, "heads": 4, "dim_head": 8, "module_type": "transformer"}


def _config(seq_len: int) -> dict:
    model_config = {
        "model": "mae_autobin",
        "encoder": dict(SMALL),
        "decoder": {**SMALL, "hidden_dim": 16, "depth": 1, "heads": 2},
        "n_class": 104,
        "seq_len": seq_len,
        "bin_alpha": 1.0,
        "bin_num": 100,
        "pad_token_id": 103,
        "mask_token_id": 102,
    }
    dataset = {"bin_num": 100, "bin_type": "auto_bin", "seq_len": seq_len}
    return {
        "model": "mae_autobin",
        "model_config": {"mae_autobin": model_config},
        "dataset_config": {"rnaseq": dataset},
    }


def _state(config: dict, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    merged = {**config["model_config"]["mae_autobin"], **config["dataset_config"]["rnaseq"]}
    encoder = ScFoundationModel(merged)
    decoder_dim = merged["decoder"]["hidden_dim"]
    decoder = nn.ModuleDict(
        {
            "decoder": Encoder(decoder_dim, merged["decoder"]["depth"], merged["decoder"]["heads"]),
            "decoder_embed": nn.Linear(merged["encoder"]["hidden_dim"], decoder_dim),
            "norm": nn.LayerNorm(decoder_dim),
            "to_final": nn.Linear(decoder_dim, 1),
        }
    )
    tensors = {**encoder.state_dict(), **decoder.state_dict()}
    return {f"model.{k}": v + 0.05 * torch.randn_like(v) for k, v in tensors.items()}


def write_scfoundation_checkpoint(folder: Path, panel: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(panel, folder / panel.name)
    seq_len = sum(1 for _ in panel.open()) - 1 + 2
    config = _config(seq_len)
    entries = {
        key: {"config": config, "state_dict": _state(config, seed)}
        for seed, key in enumerate(("gene", "cell", "rde"))
    }
    torch.save(entries, folder / "models.ckpt")
    return folder

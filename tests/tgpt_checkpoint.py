"""A small random tGPT checkpoint in the published layout, for tests and benchmarks.

The published model (lixiangchun/transcriptome-gpt-1024-8-16-64) is a
GPT2LMHeadModel directory with the word-level tokenizer files beside it; this
one has the real tokenizer and vocabulary size, and a small network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_tgpt_checkpoint(
    folder: Path, vocab: Path, n_positions: int = 64, safetensors: bool = True
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(vocab / name, folder / name)
    config = GPT2Config(
        vocab_size=21_150,
        n_positions=n_positions,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    if not safetensors:
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder

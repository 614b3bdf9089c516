"""LoRA adapters on a foundation model's attention projections (peft), checked to train.

An adapter on a module the forward pass never calls as a module (for example
an attention output projection whose weight a fused kernel reads directly),
or on a layer after the one the embedding is read from (Geneformer reads the
penultimate layer), receives no gradient and trains silently into nothing.
Two guards: `modules_on_path` asks the model itself, by one backward pass,
which target modules the embedding depends on, and only those get adapters;
`GradientWatch` then checks, after the first optimisation steps, that every
adapter matrix received gradient. At the first step only the B matrices can
(LoRA starts with B = 0, so A's gradient is zero); from the second both must.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from scdrugmap.errors import InputError, TrainingError

STEPS_BEFORE_CHECK = 2


@dataclass(frozen=True)
class LoraSettings:
    """The benchmark's defaults: r=8, alpha=8, dropout 0.05; targets per model."""

    r: int = 8
    alpha: float = 8
    dropout: float = 0.05
    targets: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return asdict(self)


def adaptable_names(model: nn.Module) -> set[str]:
    """Last name parts of the modules peft can adapt (linear layers and GPT-2's Conv1D)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    return names


def resolve_targets(model: nn.Module, requested: Sequence[str], defaults: Sequence[str]) -> tuple:
    """The user's targets, each of which must exist; else the model's defaults that exist."""
    available = adaptable_names(model)
    if requested:
        unknown = sorted(set(requested) - available)
        if unknown:
            raise InputError(
                f"unknown LoRA target module(s) {', '.join(unknown)}; this model's linear "
                f"modules are: {', '.join(sorted(available))}"
            )
        return tuple(dict.fromkeys(requested))
    present = tuple(t for t in defaults if t in available)
    if not present:
        raise InputError(f"none of the default LoRA targets {', '.join(defaults)} is in the model")
    return present


def modules_on_path(
    model: nn.Module, targets: Sequence[str], encode: Callable[[], torch.Tensor]
) -> tuple[list[str], list[str]]:
    """(full names of the target modules the embedding depends on, those it does not),
    from the gradient of one `encode()` on a few cells."""
    candidates = {
        name: module.weight
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in targets
        and isinstance(getattr(module, "weight", None), nn.Parameter)
    }
    wanted = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    for weight in candidates.values():
        weight.requires_grad_(True)
        weight.grad = None
    try:
        encode().float().sum().backward()
        reached = [n for n, w in candidates.items() if w.grad is not None and bool(w.grad.any())]
    finally:
        for weight in candidates.values():
            weight.grad = None
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(wanted[name])
    unreached = [n for n in candidates if n not in reached]
    if not reached:
        raise TrainingError(
            f"the embedding depends on none of the modules named {', '.join(targets)}; "
            "choose other --lora-targets"
        )
    return reached, unreached


def attach_lora(
    model: nn.Module, settings: LoraSettings, modules: Sequence[str], seed: int = 0
) -> nn.Module:
    """The model wrapped with fresh adapters on exactly `modules` (full names), drawn from
    `seed` so that a run (and a resumed run) starts from the same adapters; every base
    weight frozen."""
    from peft import LoraConfig, get_peft_model

    if settings.r < 1 or settings.alpha <= 0 or not 0 <= settings.dropout < 1:
        raise InputError("LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1")
    named = dict(model.named_modules())
    transposed = any(type(named[m]).__name__ == "Conv1D" for m in modules if m in named)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(modules),
        fan_in_fan_out=transposed,  # GPT-2's Conv1D stores its weight transposed
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad}


class GradientWatch:
    """Sums each adapter matrix's gradient over the first steps and refuses to go on if
    any stayed zero: such an adapter is not on the path the output takes."""

    def __init__(self, model: nn.Module) -> None:
        self.parameters = adapter_parameters(model)
        if not self.parameters:
            raise TrainingError("no trainable LoRA parameters: the adapters were not attached")
        self.seen = {name: 0.0 for name in self.parameters}
        self.steps = 0

    def after_backward(self) -> None:
        """Call after each optimisation step's gradients are complete."""
        if self.steps >= STEPS_BEFORE_CHECK:
            return
        for name, parameter in self.parameters.items():
            if parameter.grad is not None:
                self.seen[name] += float(parameter.grad.detach().abs().sum())
        self.steps += 1
        if self.steps == STEPS_BEFORE_CHECK:
            dead = sorted(name for name, total in self.seen.items() if total == 0.0)
            if dead:
                modules = sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n in dead})
                raise TrainingError(
                    f"{len(dead)} LoRA matrices received no gradient in {STEPS_BEFORE_CHECK} "
                    f"steps (modules named {', '.join(modules)}): their module is not on the "
                    "path to the output; choose other --lora-targets"
                )


def merge_adapter(base: nn.Module, adapter_dir: Path) -> nn.Module:
    """`base` with a saved peft adapter folded into its weights, ready to embed."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()

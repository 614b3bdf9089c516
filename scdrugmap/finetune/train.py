"""One fold's training: LoRA adapters and the head on the fold's training cells only.

The frozen base model runs in eval mode throughout (dropout off; see
`_adapters_train`); the adapters carry their own LoRA dropout.

Early stopping watches the loss on validation cells carved out of the
training fold (never the held-out cells), and the best epoch's adapters and
head are kept. After every epoch the state is written to disk, so a run
stopped by a crash resumes at the next epoch and ends where an unbroken run
would: each epoch's batch order and dropout draws come from (seed, epoch).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scdrugmap.embed.protocol import CellBlockEmbedder, TrainableEmbedder
from scdrugmap.embed.torch_runtime import to_device
from scdrugmap.finetune.cells import CellSource
from scdrugmap.finetune.head import ResponseHead
from scdrugmap.finetune.lora import GradientWatch, adapter_parameters
from scdrugmap.progress import progress_bar

PROGRESS_FILE = "progress.pt"
STANDARDISE_CELLS = 512


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 16
    accumulate: int = 1
    patience: int = 2
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FoldState:
    """Everything needed to go on after an epoch, and the best epoch so far."""

    epoch: int = 0
    best_loss: float = float("inf")
    best_epoch: int = -1
    epochs_without_gain: int = 0
    history: list[dict] = field(default_factory=list)
    best_adapter: dict = field(default_factory=dict)
    best_head: dict = field(default_factory=dict)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Balanced weights, so a fold dominated by one class still learns the other."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    return torch.tensor(len(labels) / (2 * np.maximum(counts, 1)), dtype=torch.float32)


def _adapter_state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _restore(model, head: ResponseHead, adapter: dict, head_state: dict) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, adapter)
    head.load_state_dict(head_state)


def _save(path: Path, state: FoldState, model, head: ResponseHead, optimizer) -> None:
    partial = path.with_suffix(".partial")
    payload = {
        **asdict(state),
        "adapter": _adapter_state(model),
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(payload, partial)
    os.replace(partial, path)


def _resume(path: Path, model, head: ResponseHead, optimizer) -> FoldState:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    _restore(model, head, saved.pop("adapter"), saved.pop("head"))
    optimizer.load_state_dict(saved.pop("optimizer"))
    return FoldState(**saved)


def _adapters_train(model) -> None:
    """Only the adapters' own dropout is on: the frozen base runs as it will when the cells
    are scored (its dropout off), so the head learns the embedding it will be given and
    the adapters are regularised by their LoRA dropout alone."""
    model.eval()
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            module.train()


def predict(
    embedder: TrainableEmbedder, head: ResponseHead, source: CellSource, positions: np.ndarray
) -> np.ndarray:
    """P(sensitive) for the cells, through the adapted model in eval mode."""
    embedder.model.eval()
    head.eval()
    embeddings = to_device(source.embed(embedder, positions), embedder.device)
    with torch.no_grad():
        return torch.softmax(head(embeddings), dim=-1)[:, 1].cpu().numpy()


def _validation_loss(embedder, head, source, positions, labels, weights) -> float:
    prob = predict(embedder, head, source, positions)
    target = torch.from_numpy(labels[positions].astype(np.int64))
    logp = torch.log(torch.from_numpy(np.stack([1 - prob, prob], 1)).clamp_min(1e-12))
    return float(F.nll_loss(logp, target, weight=weights))


def train_fold(
    embedder: TrainableEmbedder,
    source: CellSource,
    train: np.ndarray,
    validation: np.ndarray,
    labels: np.ndarray,
    settings: TrainSettings,
    work_dir: Path,
    show_progress: bool = False,
) -> tuple[ResponseHead, FoldState]:
    """The fold's head (best epoch, adapters restored to it) and its training record."""
    device = embedder.device
    model = embedder.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = ResponseHead(int(embedder.dim)).to(device)
    parameters = [*adapter_parameters(model).values(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr)
    precision = embedder.settings.get("precision", "float32")
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "float16")
    watch = GradientWatch(model)
    weights = class_weights(labels[train])
    device_weights = weights.to(device)
    targets = torch.from_numpy(labels.astype(np.int64))
    work_dir.mkdir(parents=True, exist_ok=True)
    progress_path = work_dir / PROGRESS_FILE
    state = FoldState()
    if progress_path.exists():
        # The head's standardisation comes back with its saved state.
        state = _resume(progress_path, model, head, optimizer)
    else:
        sample = np.random.default_rng(settings.seed).permutation(train)[:STANDARDISE_CELLS]
        embedder.model.eval()
        head.standardise_with(to_device(source.embed(embedder, sample), device))
    total = len(train) * max(settings.epochs - state.epoch, 0)
    with progress_bar(show_progress, total, f"fine-tuning {embedder.name}") as advance:
        while state.epoch < settings.epochs and state.epochs_without_gain < settings.patience:
            torch.manual_seed(settings.seed * 100_003 + state.epoch)
            rng = np.random.default_rng([settings.seed, state.epoch])
            batches = source.batches(
                train, settings.batch_size, rng, isinstance(embedder, CellBlockEmbedder)
            )
            _adapters_train(model)
            head.train()
            running = []
            for step, cells in enumerate(batches):
                counts, genes, ordered = source.counts(cells)
                batch = embedder.tokenize(counts, genes)
                logits = head(embedder.encode(batch, np.arange(len(ordered)))).float()
                loss = F.cross_entropy(logits, targets[ordered].to(device), weight=device_weights)
                scaler.scale(loss / settings.accumulate).backward()
                if (step + 1) % settings.accumulate == 0 or step == len(batches) - 1:
                    scaler.unscale_(optimizer)
                    watch.after_backward()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                running.append(float(loss.detach()))
                advance(len(cells), status=f"epoch {state.epoch + 1} loss {np.mean(running):.3f}")
            val_loss = _validation_loss(embedder, head, source, validation, labels, weights)
            state.history.append(
                {"epoch": state.epoch, "train_loss": float(np.mean(running)), "val_loss": val_loss}
            )
            if val_loss < state.best_loss:
                state.best_loss, state.best_epoch, state.epochs_without_gain = (
                    val_loss,
                    state.epoch,
                    0,
                )
                state.best_adapter = _adapter_state(model)
                state.best_head = {k: v.detach().clone() for k, v in head.state_dict().items()}
            else:
                state.epochs_without_gain += 1
            state.epoch += 1
            _save(progress_path, state, model, head, optimizer)
    _restore(model, head, state.best_adapter, state.best_head)
    return head, state

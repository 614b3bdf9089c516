"""LoRA fine-tuning step time and peak memory per model, on small random checkpoints in the
published layouts and real PC9 cells.

Run as `python -m benchmarks.finetune_step [--device cuda] [--models scgpt,uce]`. Each
model runs in its own process, so its peak memory (resident set on CPU, allocated
tensors on CUDA) is its own. A step is one batch: tokenise, encode with adapters,
head, loss, backward, AdamW step.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.registry import get_model
from scdrugmap.finetune.head import ResponseHead
from scdrugmap.finetune.lora import (
    LoraSettings,
    adapter_parameters,
    attach_lora,
    modules_on_path,
    resolve_targets,
)
from tests.model_checkpoints import SMALL_CHECKPOINTS

SHARED = Path(__file__).parents[1].parent / "shared"
CELLS = SHARED / "data" / "pc9_erlotinib" / "Day11_control.txt.gz"


def measure(model: str, device: str, batch_size: int, steps: int) -> dict:
    table = read_matrix_file(CELLS)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint, options = SMALL_CHECKPOINTS[model](Path(scratch) / model, SHARED, table)
        embedder = get_model(model).load_class().load(checkpoint, device=device, **options)
        counts = table.counts[3000 : 3000 + batch_size]
        batch = embedder.tokenize(counts, table.genes)
        cells = np.arange(batch_size)
        targets = resolve_targets(embedder.model, (), embedder.lora_targets)
        modules, _ = modules_on_path(embedder.model, targets, lambda: embedder.encode(batch, cells))
        embedder.model = attach_lora(embedder.model, LoraSettings(targets=targets), modules)
        head = ResponseHead(int(embedder.dim)).to(embedder.device)
        adapters = adapter_parameters(embedder.model)
        optimizer = torch.optim.AdamW([*adapters.values(), *head.parameters()], lr=1e-4)
        labels = torch.tensor([0, 1] * (batch_size // 2), device=embedder.device)
        if embedder.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps + 1):
            started = time.perf_counter()
            step_batch = embedder.tokenize(counts, table.genes)
            loss = F.cross_entropy(head(embedder.encode(step_batch, cells)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if embedder.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        peak = (
            torch.cuda.max_memory_allocated() / 2**20
            if embedder.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        return {
            "model": model,
            "step_ms": 1000 * float(np.median(times[1:])),
            "peak_mib": peak,
            "adapter_parameters": int(sum(p.numel() for p in adapters.values())),
            "adapted_modules": len(modules),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(sorted(SMALL_CHECKPOINTS)))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.batch_size, args.steps)))
        return
    memory = "allocated" if args.device.startswith("cuda") else "resident"
    print(
        f"LoRA step, {args.batch_size} PC9 cells, {args.device} "
        f"({torch.get_num_threads()} threads), small random checkpoints:"
    )
    for model in args.models.split(","):
        command = [sys.executable, "-m", "benchmarks.finetune_step", "--one", model]
        command += ["--device", args.device, "--batch-size", str(args.batch_size)]
        command += ["--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"  {model}: failed ({done.stderr.strip().splitlines()[-1]})")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"  {model:<12} {row['step_ms']:8.1f} ms/step  peak {memory} "
            f"{row['peak_mib']:7.0f} MiB  {row['adapted_modules']} modules, "
            f"{row['adapter_parameters']:,} adapter parameters"
        )


if __name__ == "__main__":
    main()

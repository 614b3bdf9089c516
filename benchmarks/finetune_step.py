"""LoRA fine-tuning step time and peak memory per model, on small random checkpoints in the
published layouts and real PC9 cells.

Run as `python -m benchmarks.finetune_step [--device cuda] [--models scgpt,uce]`. The
parent reads PC9 once, builds each checkpoint and saves the batch; each model then
trains in its own process, so its peak memory (resident high-water mark on CPU,
allocated tensors on CUDA) is its own, not the reading of PC9. A step is one
batch: tokenise, encode with adapters, head, loss, backward, AdamW step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from benchmarks.pc9 import CELLS, SHARED
from benchmarks.timing import own_peak_resident_mib
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

FIRST_CELL = 3000


def measure(model: str, device: str, checkpoint: Path, options: dict, cells: Path, steps: int):
    counts = sparse.load_npz(cells)
    genes = json.loads(cells.with_suffix(".json").read_text())
    embedder = get_model(model).load_class().load(checkpoint, device=device, **options)
    batch = embedder.tokenize(counts, genes)
    rows = np.arange(counts.shape[0])
    targets = resolve_targets(embedder.model, (), embedder.lora_targets)
    modules, _ = modules_on_path(embedder.model, targets, lambda: embedder.encode(batch, rows))
    embedder.model = attach_lora(embedder.model, LoraSettings(targets=targets), modules)
    head = ResponseHead(int(embedder.dim)).to(embedder.device)
    adapters = adapter_parameters(embedder.model)
    optimizer = torch.optim.AdamW([*adapters.values(), *head.parameters()], lr=1e-4)
    labels = torch.tensor([0, 1] * (len(rows) // 2), device=embedder.device)
    on_cuda = embedder.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        step_batch = embedder.tokenize(counts, genes)
        loss = F.cross_entropy(head(embedder.encode(step_batch, rows)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {
        "model": model,
        "step_ms": 1000 * float(np.median(times[1:])),
        "peak_mib": (
            torch.cuda.max_memory_allocated() / 2**20 if on_cuda else own_peak_resident_mib()
        ),
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
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--cells", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        options = json.loads(args.options)
        row = measure(args.one, args.device, args.checkpoint, options, args.cells, args.steps)
        print(json.dumps(row))
        return
    from scdrugmap.data.readers import read_matrix_file

    memory = "allocated" if args.device.startswith("cuda") else "resident"
    print(
        f"LoRA step, {args.batch_size} PC9 cells, {args.device} "
        f"({torch.get_num_threads()} threads), small random checkpoints:"
    )
    table = read_matrix_file(CELLS)
    with tempfile.TemporaryDirectory() as scratch:
        cells = Path(scratch) / "batch.npz"
        sparse.save_npz(cells, table.counts[FIRST_CELL : FIRST_CELL + args.batch_size])
        cells.with_suffix(".json").write_text(json.dumps(list(table.genes)))
        for model in args.models.split(","):
            checkpoint, options = SMALL_CHECKPOINTS[model](Path(scratch) / model, SHARED, table)
            command = [sys.executable, "-m", "benchmarks.finetune_step", "--one", model]
            command += ["--device", args.device, "--steps", str(args.steps)]
            command += ["--checkpoint", str(checkpoint), "--cells", str(cells)]
            command += ["--options", json.dumps(options, default=str)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"  {model}: failed ({done.stderr.strip().splitlines()[-1]})")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"  {model:<12} {row['step_ms']:8.1f} ms/step  peak {memory} "
                f"{row['peak_mib']:7.0f} MiB  {row['adapted_modules']} modules, "
                f"{row['adapter_parameters']:,} adapter parameters",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Every foundation model on one GPU: throughput, memory, utilisation and the largest batch.

For each model in scdrugmap/embed/models, at its published width (random weights written
in the published layout by the tests' checkpoint builders, their shape tables set to the
published shapes below) on real PC9 cells, at bf16 and fp32:

- cells/s of ours (`Store.embed`) and of the reference-style loop (fixed batches of 64 in
  file order, synchronous writes), both from benchmarks/embed_pipeline.py;
- the peak GPU memory of each (`torch.cuda.max_memory_allocated`, weights included);
- the model FLOPs utilisation: 2 x parameters x tokens per forward, against the device's
  peak for the dtype (`PEAK_TFLOPS`). Parameters leave out lookup tables (embeddings: a
  lookup does no multiply-add), tokens are the real ones (no padding), and attention's
  sequence-squared term is not counted, so the figure is the useful dense work;
- the largest batch that fits: the batch's longest cells repeated, doubling from 8 cells
  until out of memory, bounded by `--max-batch` cells and by `--search-seconds`.

The number of cells each model embeds is set from a timed 64-cell batch, so that ours
takes about `--target-seconds`: a few hundred cells for scBERT's 16,907 tokens a cell,
thousands for tGPT's 64. One table is printed; everything goes to `--out` as JSON.

    python -m benchmarks.gpu_suite [--out gpu_suite.json] [--models scgpt,uce] [--device cuda]
    python -m benchmarks.gpu_suite --quick   # tiny widths, few cells: seconds, fp32 on CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.embed_pipeline import embed_ours, embed_reference_style
from benchmarks.pc9 import CELLS, SHARED
from tests.model_checkpoints import SMALL_CHECKPOINTS, Builder

# Dense peaks in TFLOP/s from NVIDIA's datasheets ("NVIDIA H100 Tensor Core GPU", SXM5,
# PCIe and NVL columns; "NVIDIA H200 Tensor Core GPU", SXM and NVL columns). The sheets
# give the tensor-core figures with 2:4 sparsity, so dense is half of them; float32 is the
# FP32 (non-tensor-core) figure, the peak of a float32 matmul unless TF32 is allowed.
PEAK_SOURCE = (
    "NVIDIA H100 and H200 Tensor Core GPU datasheets: BF16 and TF32 tensor-core figures "
    "halved (the sheets quote them with sparsity), FP32 as listed"
)
PEAK_TFLOPS = {
    "H100 SXM": {"bfloat16": 1979 / 2, "tf32": 989 / 2, "float32": 67.0},
    "H100 PCIe": {"bfloat16": 1513 / 2, "tf32": 756 / 2, "float32": 51.0},
    "H100 NVL": {"bfloat16": 1671 / 2, "tf32": 835 / 2, "float32": 60.0},
    "H200 SXM": {"bfloat16": 1979 / 2, "tf32": 989 / 2, "float32": 67.0},
    "H200 NVL": {"bfloat16": 1671 / 2, "tf32": 835 / 2, "float32": 60.0},
}
DTYPES = ("bfloat16", "float32")
# Parameters that are looked up (summed over a cell's genes), not multiplied by every token,
# beyond torch.nn.Embedding modules.
LOOKUP_PARAMETERS = {"cellplm": ("embedder.feat_enc.emb",)}
CALIBRATION_CELLS = 64
FIRST_BATCH = 8


def device_peak(name: str) -> tuple[str | None, dict | None]:
    """The `PEAK_TFLOPS` row of a CUDA device name ("NVIDIA H100 80GB HBM3" is an SXM)."""
    for chip in ("H200", "H100"):
        if chip in name:
            form = "NVL" if "NVL" in name else "PCIe" if "PCIe" in name else "SXM"
            return f"{chip} {form}", PEAK_TFLOPS[f"{chip} {form}"]
    return None, None


# The published shapes, from each model's published config: Geneformer V1's config.json
# (tests/data/vocab), scGPT_human's args.json, transcriptome-gpt-1024-8-16-64's name and
# config, scFoundation's models.ckpt config (100M encoder), UCE's 4-layer model, scBERT's
# PerformerLM call in its predict.py, OpenBioMed's configs/ctc/cellLM.json, CellPLM's
# 20230926_85M (tests/cellplm_checkpoint.PUBLISHED).
SCGPT = {"embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12}
TGPT = {"n_embd": 1024, "n_layer": 8, "n_head": 16, "n_positions": 64}
SCFOUNDATION = {"hidden_dim": 768, "depth": 12, "heads": 12, "dim_head": 64}
UCE = {"token_dim": 5120, "d_model": 1280, "d_hid": 5120, "nlayers": 4, "output_dim": 1280}
SCBERT = {"dim": 200, "depth": 6, "heads": 10, "dim_head": 64}
SCBERT_GENES = 16_906
CELLLM = {"dim": 512, "depth": 10, "heads": 16, "dim_head": 64}
CELLLM_GENES = 19_379


def _geneformer(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from tests.geneformer_checkpoint import write_geneformer_checkpoint

    vocab = shared / "vocab" / "geneformer_v1"
    checkpoint = write_geneformer_checkpoint(folder, vocab)
    torch.manual_seed(0)
    config = json.loads((vocab / "config.json").read_text())
    BertForMaskedLM(BertConfig(**config)).save_pretrained(checkpoint)
    return checkpoint, {}


def _scgpt(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    from tests.scgpt_checkpoint import write_scgpt_checkpoint

    census = shared / "vocab" / "scgpt" / "default_census_vocab.json"
    return write_scgpt_checkpoint(folder, census, **SCGPT), {}


def _tgpt(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tgpt_checkpoint import write_tgpt_checkpoint

    checkpoint = write_tgpt_checkpoint(folder, shared / "vocab" / "tgpt")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=21_150, bos_token_id=1, eos_token_id=2, **TGPT)
    GPT2LMHeadModel(config).save_pretrained(checkpoint)
    return checkpoint, {}


def _scfoundation(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    import tests.scfoundation_checkpoint as builder

    panel = shared / "vocab" / "scfoundation" / "OS_scRNA_gene_index.19264.tsv"
    with mock.patch.dict(builder.SMALL, SCFOUNDATION):
        return builder.write_scfoundation_checkpoint(folder, panel), {}


def _uce(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    import tests.uce_checkpoint as builder

    with mock.patch.dict(builder.SHAPES, UCE):
        symbols = [g for i, g in enumerate(table.genes) if i % 10]
        return builder.write_uce_checkpoint(folder, symbols), {}


def _performer(write: Callable, shape: dict, genes: int) -> Builder:
    def build(folder: Path, shared: Path, table) -> tuple[Path, dict]:
        import tests.performer_checkpoint as performer
        from tests.data_files import top_expressed_genes

        with mock.patch.dict(performer.SMALL, shape):
            checkpoint = write(folder, top_expressed_genes(table, genes))
        return checkpoint, {"heads": shape["heads"], "dim_head": shape["dim_head"]}

    return build


def _scbert(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    from tests.scbert_checkpoint import write_scbert_checkpoint

    return _performer(write_scbert_checkpoint, SCBERT, SCBERT_GENES)(folder, shared, table)


def _celllm(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    from tests.celllm_checkpoint import write_celllm_checkpoint

    return _performer(write_celllm_checkpoint, CELLLM, CELLLM_GENES)(folder, shared, table)


def _cellplm(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    from tests.cellplm_checkpoint import PUBLISHED, write_cellplm_checkpoint

    return write_cellplm_checkpoint(folder, shared, widths=PUBLISHED), {}


def _text(folder: Path, shared: Path, table) -> tuple[Path, dict]:
    """The bundled all-MiniLM-L6-v2: real, published weights already."""
    from scdrugmap.embed.checkpoints import bundled_checkpoint

    return bundled_checkpoint("text"), {}


PUBLISHED_CHECKPOINTS: dict[str, Builder] = {
    "geneformer": _geneformer,
    "scgpt": _scgpt,
    "tgpt": _tgpt,
    "text": _text,
    "scfoundation": _scfoundation,
    "uce": _uce,
    "scbert": _scbert,
    "celllm": _celllm,
    "cellplm": _cellplm,
}


def spread_rows(n_total: int, n_cells: int) -> np.ndarray:
    """`n_cells` rows spread evenly over the file, the middle row of each of `n_cells`
    equal parts: the file's first rows are its largest cells (4,900 expressed genes against
    220 on average in PC9), so they are no sample of it."""
    n_cells = min(n_cells, n_total)
    return ((np.arange(n_cells) + 0.5) * n_total / n_cells).astype(np.int64)


class Stores:
    """Stores of n PC9 cells spread over the file (data set 'pc9', one sample), built once
    per n through the real ingest of an h5ad."""

    def __init__(self, folder: Path, table) -> None:
        self.folder, self.table, self.built = folder, table, {}

    def __call__(self, n_cells: int):
        if n_cells not in self.built:
            import anndata as ad
            import pandas as pd

            from scdrugmap import Store
            from scdrugmap.data.prepare import IngestOptions

            path = self.folder / f"pc9-{n_cells}.h5ad"
            counts = self.table.counts[spread_rows(self.table.counts.shape[0], n_cells)]
            obs = pd.DataFrame(index=[f"a{i}" for i in range(counts.shape[0])])
            var = pd.DataFrame(index=list(self.table.genes))
            ad.AnnData(X=counts, obs=obs, var=var).write_h5ad(path)
            store = Store(self.folder / f"store-{n_cells}")
            store.ingest([path], IngestOptions("pc9", samples=["a"], labels=["sensitive"]))
            self.built[n_cells] = store
        return self.built[n_cells]


def dense_parameters(model: str, network) -> tuple[int, int]:
    """(all parameters, those multiplied by every token: all but lookup tables)."""
    import torch

    lookups = {
        id(p)
        for module in network.modules()
        if isinstance(module, torch.nn.Embedding)
        for p in module.parameters(recurse=False)
    }
    named = dict(network.named_parameters())
    lookups |= {id(named[name]) for name in LOOKUP_PARAMETERS.get(model, ()) if name in named}
    total = sum(p.numel() for p in network.parameters())
    return total, total - sum(p.numel() for p in network.parameters() if id(p) in lookups)


def token_lengths(batch, n_cells: int) -> np.ndarray:
    """Real tokens a cell puts through the network; CellPLM's sequence is the cells
    themselves, one token each."""
    lengths = getattr(batch, "lengths", None)
    return np.ones(n_cells, dtype=np.int64) if lengths is None else np.asarray(lengths)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on_device(device, work: Callable[[], float]) -> tuple[float, float | None]:
    """(work's result, peak GPU MiB allocated while it ran; None off CUDA)."""
    import torch

    if device.type != "cuda":
        return work(), None
    synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    result = work()
    synchronize(device)
    return result, torch.cuda.max_memory_allocated(device) / 2**20


def _out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text
    )


def largest_batch(
    embedder, batch, lengths: np.ndarray, device, max_cells: int, seconds: float
) -> tuple[int, str]:
    """Doubling batches of the longest cells until one fails for memory: (largest that
    fitted, what stopped the search). A step that would overrun `seconds` is not taken."""
    import torch

    longest = np.argsort(-lengths, kind="stable")[:CALIBRATION_CELLS]
    size, fitted, spent, last = FIRST_BATCH, 0, 0.0, 0.0
    stopped = "cell bound"
    while size <= max_cells:
        if spent + 2 * last > seconds:
            stopped = "time bound"
            break
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                embedder.encode(batch, np.resize(longest, size))
                synchronize(device)
        except Exception as error:  # the search reports what stopped it, the figures stay
            stopped = "out of memory" if _out_of_memory(error) else f"{type(error).__name__}"
            break
        last = time.perf_counter() - started
        spent += last
        fitted, size = size, 2 * size
    # Freed here, not in the handler: its traceback still held the failed batch's tensors.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return fitted, stopped


def cells_for(embedder, table, device, target_seconds: float, most: int) -> int:
    """Cells for ours to take about `target_seconds`: a power of two from a timed batch."""
    counts = table.counts[spread_rows(table.counts.shape[0], CALIBRATION_CELLS)]
    batch = embedder.tokenize(counts, table.genes)
    started = time.perf_counter()
    embedder.embed(batch)
    synchronize(device)
    rate = CALIBRATION_CELLS / (time.perf_counter() - started)
    wanted = 2 ** round(math.log2(max(rate * target_seconds, 1)))
    return int(min(max(wanted, 2 * CALIBRATION_CELLS), most))


def measure(
    model: str, checkpoint: Path, options: dict, dtype: str, device_name: str, stores, args
) -> dict:
    """Every figure of one model at one precision."""
    import torch

    from scdrugmap.embed.registry import get_model

    spec = get_model(model)
    embedder = spec.load_class().load(checkpoint, device=device_name, precision=dtype, **options)
    device = torch.device(embedder.device)
    total, dense = dense_parameters(model, embedder.model)
    first = stores.table.counts[spread_rows(stores.table.counts.shape[0], FIRST_BATCH)]
    embedder.embed(embedder.tokenize(first, stores.table.genes))  # kernels, caches: untimed
    n_cells = (
        args.cells
        if args.quick
        else cells_for(embedder, stores.table, device, args.target_seconds, args.max_cells)
    )
    store = stores(n_cells)
    reader = store.reader("pc9")
    n_cells = reader.n_cells  # all of a trimmed file's cells, when it has fewer
    batch = embedder.tokenize(reader.read_rows(0, n_cells), reader.gene_ids)
    lengths = token_lengths(batch, n_cells)
    key = f"suite-{model}-{dtype}"
    ours, ours_mib = on_device(device, partial(embed_ours, store, embedder, key))
    target = store.path.parent / f"{key}-reference.zarr"
    reference, reference_mib = on_device(
        device, partial(embed_reference_style, store, embedder, target)
    )
    flops_per_cell = 2.0 * dense * float(lengths.mean())
    peak = None
    if args.peak is not None:
        tf32 = dtype == "float32" and torch.backends.cuda.matmul.allow_tf32
        peak = args.peak["tf32" if tf32 else dtype] * 1e12
    fitted, bound = largest_batch(
        embedder, batch, lengths, device, args.max_batch, args.search_seconds
    )
    figures = {
        "cells": n_cells,
        "tokens_per_cell": float(lengths.mean()),
        "parameters": total,
        "parameters_counted": dense,
        "dim": int(embedder.dim),
        "ours_cells_per_s": ours,
        "reference_cells_per_s": reference,
        "ours_peak_gpu_mib": ours_mib,
        "reference_peak_gpu_mib": reference_mib,
        "ours_mfu": None if peak is None else ours * flops_per_cell / peak,
        "reference_mfu": None if peak is None else reference * flops_per_cell / peak,
        "largest_batch": fitted,
        "largest_batch_stopped_by": bound,
    }
    del embedder, batch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return figures


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_table(results: dict) -> None:
    header = (
        f"{'model':<13}{'dtype':<10}{'params':>8}{'cells':>7}{'tok/cell':>9}"
        f"{'ours c/s':>11}{'ref c/s':>10}{'x':>6}{'ours MiB':>10}{'ref MiB':>9}"
        f"{'ours MFU':>9}{'ref MFU':>9}{'max batch':>11}  stopped by"
    )
    print(header)
    for model, entry in results.items():
        if "error" in entry:
            print(f"{model:<13}failed: {entry['error']}")
            continue
        for dtype in entry["dtypes"]:
            row = entry[dtype]
            if "error" in row:
                print(f"{model:<13}{dtype:<10}failed: {row['error']}")
                continue
            ratio = row["ours_cells_per_s"] / row["reference_cells_per_s"]
            print(
                f"{model:<13}{dtype:<10}{row['parameters_counted'] / 1e6:>7.1f}M"
                f"{row['cells']:>7}{row['tokens_per_cell']:>9.0f}"
                f"{row['ours_cells_per_s']:>11,.0f}{row['reference_cells_per_s']:>10,.0f}"
                f"{ratio:>6.1f}{_mib(row['ours_peak_gpu_mib']):>10}"
                f"{_mib(row['reference_peak_gpu_mib']):>9}"
                f"{_percent(row['ours_mfu']):>9}{_percent(row['reference_mfu']):>9}"
                f"{row['largest_batch']:>11,}  {row['largest_batch_stopped_by']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_suite.json"))
    parser.add_argument("--models", default=",".join(PUBLISHED_CHECKPOINTS))
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu")
    parser.add_argument("--quick", action="store_true", help="tiny widths, few cells")
    parser.add_argument("--cells", type=int, default=24, help="cells a model embeds (--quick)")
    parser.add_argument("--max-cells", type=int, default=4096, help="most cells a model embeds")
    parser.add_argument("--target-seconds", type=float, default=3.0)
    parser.add_argument("--max-batch", type=int, default=None, help="largest batch tried")
    parser.add_argument("--search-seconds", type=float, default=8.0)
    parser.add_argument(
        "--budget-seconds", type=float, default=None, help="no model starts later (420 s)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where checkpoints are built")
    args = parser.parse_args()

    import torch

    from scdrugmap.data.readers import read_matrix_file
    from scdrugmap.embed.torch_runtime import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    chip, args.peak = device_peak(name) if cuda else (None, None)
    dtypes = DTYPES if cuda else ("float32",)
    if args.quick:
        args.max_cells = args.cells
    if args.budget_seconds is None:
        args.budget_seconds = math.inf if args.quick else 420.0
    if args.max_batch is None:
        args.max_batch = args.cells if args.quick or not cuda else 65_536
    builders = SMALL_CHECKPOINTS if args.quick else PUBLISHED_CHECKPOINTS
    table = read_matrix_file(CELLS)
    args.max_cells = min(args.max_cells, table.counts.shape[0])
    started = time.perf_counter()
    results: dict = {}
    print(
        f"{name}{f' ({chip})' if chip else ''}, torch {torch.__version__}, "
        f"{'tiny' if args.quick else 'published'} widths, real PC9 cells ({CELLS.name}); "
        f"fp32 matmuls {'may use TF32' if torch.backends.cuda.matmul.allow_tf32 else 'in FP32'}",
        flush=True,
    )
    report = {
        "device": name,
        "chip": chip,
        "peak_tflops": args.peak,
        "peak_source": PEAK_SOURCE,
        "fp32_matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "torch": torch.__version__,
        "quick": args.quick,
        "seconds": 0.0,
        "models": results,
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        stores = Stores(Path(scratch), table)
        for model in args.models.split(","):
            entry: dict = {"dtypes": list(dtypes)}
            results[model] = entry
            if time.perf_counter() - started > args.budget_seconds:
                entry["error"] = f"skipped: past --budget-seconds {args.budget_seconds:.0f}"
                continue
            building = time.perf_counter()
            try:
                checkpoint, options = builders[model](Path(scratch) / model, SHARED, table)
                entry["build_seconds"] = time.perf_counter() - building
            except Exception as error:  # one model's failure must not hide the others'
                entry["error"] = f"{type(error).__name__}: {error}"
                continue
            for dtype in dtypes:
                measuring = time.perf_counter()
                try:
                    entry[dtype] = measure(
                        model, checkpoint, dict(options), dtype, str(device), stores, args
                    )
                except Exception as error:
                    entry[dtype] = {"error": f"{type(error).__name__}: {error}"}
                entry[dtype]["seconds"] = time.perf_counter() - measuring
            shutil.rmtree(Path(scratch) / model, ignore_errors=True)  # UCE's is 3 GB
            print(f"  {model}: {time.perf_counter() - building:.0f} s", file=sys.stderr)
            # Written after every model, so a run stopped part way keeps what it measured.
            report["seconds"] = time.perf_counter() - started
            args.out.write_text(json.dumps(report, indent=2))
    print_table(results)
    report["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{report['seconds']:.0f} s in all; JSON in {args.out}")


if __name__ == "__main__":
    main()

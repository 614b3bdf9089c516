"""tGPT parity: scdrugmap's embedding against deeplearningplus/tGPT's feature extraction.

The tGPT repository is not a package: its reference for embedding cells is the loop in
its README ("Extract features": `LineDataset`, `PreTrainedTokenizerFast`,
`GPT2LMHeadModel(...).transformer`, batches of 64, truncation to `max_len`, the mean of
the last hidden states between `</b>` and `</s>`). This script runs that block itself:
it reads the checkout's README.md at run time, takes the Python block under "Extract
features" and executes it (nothing of it is copied here), with its parameters set as the
README's "Setting parameter" block sets them, but pointing at the local random
checkpoint, on the CPU, with `max_len = 64`. The loop reads cells as lines of gene
symbols ranked by expression, as its published `Muris_gene_rankings.txt.gz`; that file's
making is not in the repository, so the script writes the lines: each cell's expressed
genes whose symbol (after the loop's own `-`/`.` to `_`) is one word of the tokenizer's
vocabulary, by decreasing count, ties in column order. The loop's tokenizer cuts each
line to 62 genes. The token ids the loop gives its model are recorded and compared with
scdrugmap's.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.common import (
    TESTS_DATA,
    Reference,
    parse_args,
    real_cells,
    reference_commit,
    reference_on_path,
    report,
    scdrugmap_embedding,
    work_folder,
)
from scdrugmap.data.readers import SourceTable

REFERENCE = Reference("deeplearningplus/tGPT", "9714a98")
DEFAULT_CELLS = 600
MAX_LEN = 64  # the README's max_len, the published model's n_positions
VOCAB = TESTS_DATA / "vocab" / "tgpt"
SECTION = "### Extract features"


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The tests' small random GPT2LMHeadModel with the real word-level tokenizer."""
    from tests.tgpt_checkpoint import write_tgpt_checkpoint

    return write_tgpt_checkpoint(folder / "tgpt", VOCAB, n_positions=MAX_LEN), {}


def readme_loop(reference: Path) -> str:
    """The Python block under "Extract features" in the checkout's README.md."""
    readme = reference / "README.md"
    if not readme.is_file():
        raise SystemExit(f"--reference {reference}: no README.md")
    text = readme.read_text()
    if SECTION not in text:
        raise SystemExit(f"{readme}: no {SECTION!r} section; is this deeplearningplus/tGPT?")
    found = re.search(r"```python\n(.*?)```", text[text.index(SECTION) :], re.DOTALL)
    if found is None:
        raise SystemExit(f"{readme}: no Python block under {SECTION!r}")
    return found.group(1)


def ranked_lines(cells: SourceTable, vocabulary: dict[str, int], specials: set[str]) -> list[str]:
    """Each cell's known expressed symbols, most expressed first, as one line of text."""
    words = [re.sub(r"-|\.", "_", str(g)) for g in cells.genes]
    one_word = [re.fullmatch(r"\w+", w) is not None for w in words]
    known = np.array([o and w in vocabulary and w not in specials for o, w in zip(one_word, words)])
    names = np.array([str(g) for g in cells.genes], dtype=object)
    lines = []
    for row in cells.counts.tocsr():
        columns, counts = row.indices, row.data
        keep = known[columns] & (counts > 0)
        columns, counts = columns[keep], counts[keep]
        order = np.lexsort((columns, -counts))
        lines.append(" ".join(names[columns[order]]))
    return lines


def run_reference(reference: Path, checkpoint: Path, lines_file: Path) -> tuple[np.ndarray, list]:
    """The README loop on our lines; also the token ids each cell was given."""
    from functools import partial

    import torch
    from torch.utils.data import DataLoader, Dataset
    from tqdm import tqdm
    from transformers import GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast

    fed: list[np.ndarray] = []

    def record(module, args, kwargs):
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"]):
            fed.append(ids[mask.bool()].numpy().copy())

    class RecordingGPT2LMHeadModel:
        """GPT2LMHeadModel, whose `.transformer` records the ids the loop gives it."""

        @staticmethod
        def from_pretrained(*args, **kwargs):
            model = GPT2LMHeadModel.from_pretrained(*args, **kwargs)
            model.transformer.register_forward_pre_hook(record, with_kwargs=True)
            return model

    namespace = {
        "re": re, "gzip": gzip, "torch": torch, "np": np, "tqdm": partial(tqdm, disable=True),
        "DataLoader": DataLoader, "Dataset": Dataset,
        "PreTrainedTokenizerFast": PreTrainedTokenizerFast,
        "GPT2LMHeadModel": RecordingGPT2LMHeadModel, "GPT2Model": GPT2Model,
        # the README's "Setting parameter" block, for the local checkpoint on the CPU
        "device": "cpu", "tokenizer_file": str(checkpoint), "checkpoint": str(checkpoint),
        "max_len": MAX_LEN, "text_file": str(lines_file),
    }  # fmt: skip
    with torch.no_grad():
        exec(compile(readme_loop(reference), str(reference / "README.md"), "exec"), namespace)
    return np.asarray(namespace["features"]), fed


def main(argv: Sequence[str] | None = None) -> float:
    from scdrugmap.embed.models.tgpt import TGPTEmbedder

    args = parse_args(__doc__, REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    cells = real_cells(args.cells)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder)
        embedder = TGPTEmbedder.load(checkpoint)
        vocabulary = embedder.tokenizer.vocabulary
        specials = {w for w, i in vocabulary.ids.items() if i in {vocabulary.bos_id,
                    vocabulary.eos_id, vocabulary.pad_id}}  # fmt: skip
        lines_file = folder / "gene_rankings.txt.gz"
        with gzip.open(lines_file, "wt") as handle:
            handle.write("".join(line + "\n" for line in ranked_lines(cells, vocabulary.ids,
                                                                       specials)))  # fmt: skip
        with reference_on_path(args.reference):
            theirs, fed = run_reference(args.reference, checkpoint, lines_file)
        ours = scdrugmap_embedding(folder, cells, "tgpt", checkpoint, params)
        batch = embedder.tokenize(cells.counts, list(cells.genes))
    diff = report("tgpt", ours, theirs, commit, REFERENCE.repo)
    same = sum(
        np.array_equal(batch.ids[batch.offsets[i] : batch.offsets[i + 1]], ids)
        for i, ids in enumerate(fed)
    )
    print(f"tgpt tokens: identical token ids for {same} of {len(fed)} cells")
    return diff


if __name__ == "__main__":
    main()

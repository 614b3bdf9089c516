"""Geneformer V2 parity: scdrugmap against the authors' V2 tokenizer and embedding extractor,
for both poolings (mean over the gene tokens, `<cls>`).

The checkout publishes no dictionaries (its gc104M pickles are not in the repository), so
the random checkpoint is the tests' V2 one: the real V1 dictionaries with `<cls>` and
`<eos>` added, 4,096 positions, in the published layout. The same real PC9 cells go, as a
loom file (`ensembl_id` rows, float32 counts, float64 `n_counts`), through the checkout's
`TranscriptomeTokenizer` (model_version V2: special tokens, 4,096 tokens, gene IDs
collapsed) and `EmbExtractor.extract_embs` in `cell` and `cls` mode (penultimate layer), and
through `scdrugmap embed --model geneformer` with `pooling=mean` and `pooling=cls`. The line
printed is the larger max |diff| of the two; the extractor's cell order is undone through a
`cell_index` label, and its "cuda" devices read as the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.common import (
    Reference,
    parse_args,
    real_cells,
    reference_commit,
    report,
    scdrugmap_embedding,
    work_folder,
)
from parity.geneformer_v1 import (
    FORWARD_BATCH_SIZE,
    VOCAB,
    cuda_on_cpu,
    import_reference,
    in_data_order,
    write_loom,
)
from scdrugmap.data.readers import SourceTable

REFERENCE = Reference("haroonshakeel/Geneformer", "e534f69")
DEFAULT_CELLS = 300
POOLINGS = {"mean": "cell", "cls": "cls"}  # scdrugmap's pooling: the extractor's emb_mode


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The tests' small random V2 checkpoint: V1 dictionaries plus `<cls>` and `<eos>`."""
    from scdrugmap.embed.safe_pickle import load_plain_dictionary
    from tests.geneformer_checkpoint import write_geneformer_checkpoint

    tokens = load_plain_dictionary(VOCAB / "token_dictionary.pkl")
    tokens.update({"<cls>": len(tokens), "<eos>": len(tokens) + 1})
    return write_geneformer_checkpoint(folder, VOCAB, tokens), {}


def reference_embeddings(
    path: Path, cells: SourceTable, checkpoint: Path, folder: Path
) -> dict[str, np.ndarray]:
    """The checkout's V2 tokenizer once, its extractor once per pooling."""
    tokenizer, extractor = import_reference(path, "tokenizer", "emb_extractor")
    loom = write_loom(folder / "loom" / "cells.loom", cells, checkpoint)
    tokenize = tokenizer.TranscriptomeTokenizer(
        {"cell_index": "cell_index"},
        nproc=1,
        model_input_size=4096,
        special_token=True,
        collapse_gene_ids=True,
        model_version="V2",
        gene_median_file=checkpoint / "gene_median_dictionary.pkl",
        token_dictionary_file=checkpoint / "token_dictionary.pkl",
        gene_mapping_file=None,
    )
    tokenize.tokenize_data(loom.parent, folder, "cells", file_format="loom")
    embeddings = {}
    for pooling, emb_mode in POOLINGS.items():
        embex = extractor.EmbExtractor(
            model_type="Pretrained",
            emb_mode=emb_mode,
            max_ncells=None,
            emb_layer=-1,
            emb_label=["cell_index"],
            forward_batch_size=FORWARD_BATCH_SIZE,
            nproc=1,
            model_version="V2",
            token_dictionary_file=str(checkpoint / "token_dictionary.pkl"),
        )
        with cuda_on_cpu():
            embs = embex.extract_embs(
                checkpoint, folder / "cells.dataset", folder, f"reference-{pooling}"
            )
        embeddings[pooling] = in_data_order(embs, cells.counts.shape[0])
    return embeddings


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(__doc__, REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    cells = real_cells(args.cells)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder / "checkpoint")
        theirs = reference_embeddings(args.reference, cells, checkpoint, folder / "reference")
        ours = {}
        for pooling in POOLINGS:
            (folder / f"ours-{pooling}").mkdir()
            ours[pooling] = scdrugmap_embedding(
                folder / f"ours-{pooling}",
                cells,
                "geneformer",
                checkpoint,
                {**params, "pooling": pooling},
            )
    return report(
        "geneformer V2 (mean and cls)",
        np.hstack([ours[p] for p in POOLINGS]),
        np.hstack([theirs[p] for p in POOLINGS]),
        commit,
        REFERENCE.repo,
    )


if __name__ == "__main__":
    main()

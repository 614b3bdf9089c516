"""The demo data must be reproducible, count-like, and hard in the right way.

A demo whose labels are trivially separable (or not separable at all) would
let a broken pipeline pass, so the tests pin the difficulty from both sides.
"""

from __future__ import annotations

import re

import anndata
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from scdrugmap.data.demo import (
    RESISTANCE_DOWN,
    RESISTANCE_UP,
    demo_gene_symbols,
    generate_demo_datasets,
    write_demo_files,
)

PROGRAMME = [*RESISTANCE_UP, *RESISTANCE_DOWN]


@pytest.fixture(scope="module")
def demo():
    return {d.dataset_id: d for d in generate_demo_datasets(seed=0)}


def log_cp10k(adata: anndata.AnnData, genes=None) -> np.ndarray:
    x = adata.X.toarray()
    x = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)
    if genes is None:
        return x
    return x[:, adata.var_names.get_indexer(genes)]


def is_sensitive(adata: anndata.AnnData) -> np.ndarray:
    return (adata.obs["response"] == "sensitive").to_numpy().astype(int)


def held_out_sample_auroc(adata: anndata.AnnData, x: np.ndarray, test_samples: set[str]) -> float:
    """Train on some samples and score others: cells of a sample never sit on both sides."""
    y = is_sensitive(adata)
    test = adata.obs["sample"].isin(test_samples).to_numpy()
    model = LogisticRegression(C=0.1, max_iter=3000).fit(x[~test], y[~test])
    return roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])


def test_same_seed_gives_identical_bytes():
    first = generate_demo_datasets(seed=3, scale=0.2)
    second = generate_demo_datasets(seed=3, scale=0.2)
    for a, b in zip(first, second, strict=True):
        assert a.dataset_id == b.dataset_id
        assert a.metadata == b.metadata
        for part in ("data", "indices", "indptr"):
            assert getattr(a.adata.X, part).tobytes() == getattr(b.adata.X, part).tobytes()
        assert a.adata.obs.equals(b.adata.obs)
        assert a.adata.obs_names.equals(b.adata.obs_names)
        assert a.adata.var_names.equals(b.adata.var_names)


def test_other_seed_gives_other_counts():
    a = generate_demo_datasets(seed=0, scale=0.1)[0].adata
    b = generate_demo_datasets(seed=1, scale=0.1)[0].adata
    assert a.shape[0] == b.shape[0]
    assert a.X.data.tobytes() != b.X.data.tobytes()


def test_counts_are_sparse_non_negative_integers(demo):
    for d in demo.values():
        x = d.adata.X
        assert x.format == "csr"
        assert x.dtype == np.float32
        assert np.all(x.data >= 0)
        assert np.array_equal(x.data, np.round(x.data))
        assert 0.05 < x.nnz / np.prod(x.shape) < 0.6, "droplet data are sparse"
        umis = np.asarray(x.sum(axis=1)).ravel()
        assert umis.min() > 0
        assert 800 < np.median(umis) < 5000


def test_shapes_names_and_metadata(demo):
    assert len(demo) == 3
    assert 4000 <= sum(d.adata.n_obs for d in demo.values()) <= 6000
    assert 1800 <= len(demo_gene_symbols()) <= 2200
    barcode = re.compile(r"^[ACGT]{16}-\d$")
    for d in demo.values():
        adata = d.adata
        assert adata.obs_names.is_unique
        assert all(barcode.match(b) for b in adata.obs_names)
        assert adata.var_names.is_unique
        assert set(adata.var_names) <= set(demo_gene_symbols())
        assert set(d.metadata) == {"drug", "cancer_type", "tissue", "therapy", "regimen"}
        assert all(isinstance(v, str) and v for v in d.metadata.values())
    assert any(g.startswith("MT-") for g in demo_gene_symbols())
    assert any(g.startswith("RPL") for g in demo_gene_symbols())


def test_scale_multiplies_cells_not_genes(demo):
    small = {d.dataset_id: d.adata for d in generate_demo_datasets(seed=0, scale=0.1)}
    for dataset_id, full in ((k, v.adata) for k, v in demo.items()):
        assert small[dataset_id].n_obs == pytest.approx(full.n_obs * 0.1, rel=0.05)
        assert small[dataset_id].var_names.equals(full.var_names)
    with pytest.raises(ValueError, match="scale"):
        generate_demo_datasets(scale=0)


def test_labels_are_per_sample_and_both_present(demo):
    for d in demo.values():
        obs = d.adata.obs
        assert set(obs["response"]) == {"sensitive", "resistant"}
        labels_per_sample = obs.groupby("sample", observed=True)["response"].nunique()
        assert (labels_per_sample == 1).all()
        assert 2 <= len(labels_per_sample) <= 4


def test_programme_is_learnable_on_held_out_samples(demo):
    adata = demo["demo_lung_erlotinib"].adata
    x = log_cp10k(adata, PROGRAMME)
    for test in (
        {"PC9_D0_rep2", "PC9_erlotinib_D11_rep2"},
        {"PC9_D0_rep1", "PC9_erlotinib_D11_rep1"},
    ):
        assert held_out_sample_auroc(adata, x, test) > 0.75


def test_random_genes_do_not_carry_the_label(demo):
    adata = demo["demo_breast_paclitaxel"].adata
    rng = np.random.default_rng(0)
    genes = rng.choice(np.setdiff1d(adata.var_names, PROGRAMME), 50, replace=False)
    auroc = held_out_sample_auroc(
        adata, log_cp10k(adata, genes), {"PDX2_pretreatment", "PDX2_residual"}
    )
    assert auroc < 0.7


def test_task_is_not_trivial_even_with_leaky_cell_level_folds(demo):
    for d in demo.values():
        x = log_cp10k(d.adata, PROGRAMME)
        y = is_sensitive(d.adata)
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        p = cross_val_predict(
            LogisticRegression(C=0.1, max_iter=3000), x, y, cv=folds, method="predict_proba"
        )[:, 1]
        assert 0.75 < roc_auc_score(y, p) < 0.999, d.dataset_id


def test_batch_effects_between_data_sets(demo):
    adatas = [d.adata for d in demo.values()]
    common = sorted(set.intersection(*(set(a.var_names) for a in adatas)))
    means = [log_cp10k(a, common).mean(axis=0) for a in adatas]
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            assert np.abs(means[i] - means[j]).mean() > 0.1
    depths = [np.median(np.asarray(a.X.sum(axis=1)).ravel()) for a in adatas]
    assert max(depths) / min(depths) > 1.3
    melanoma, lung = demo["demo_melanoma_plx4720"].adata, demo["demo_lung_erlotinib"].adata
    assert log_cp10k(melanoma, ["MLANA"]).mean() > log_cp10k(lung, ["MLANA"]).mean() + 1


def test_gene_sets_overlap_but_differ(demo):
    gene_sets = [set(d.adata.var_names) for d in demo.values()]
    assert len({frozenset(s) for s in gene_sets}) == len(gene_sets)
    union, common = set.union(*gene_sets), set.intersection(*gene_sets)
    assert 0.8 < len(common) / len(union) < 0.99
    assert all(set(PROGRAMME) <= s for s in gene_sets)
    orders = [list(d.adata.var_names[:20]) for d in demo.values()]
    assert orders[0] != orders[1], "each data set lists genes in its own order"


def test_write_demo_files_round_trip(tmp_path):
    written = write_demo_files(tmp_path / "demo", seed=0, scale=0.1)
    assert [p.name for p, _ in written] == [f"{d.dataset_id}.h5ad" for _, d in written]
    for path, dataset in written:
        back = anndata.read_h5ad(path)
        assert (back.X != dataset.adata.X).nnz == 0
        assert back.obs_names.equals(dataset.adata.obs_names)
        assert back.var_names.equals(dataset.adata.var_names)
        assert list(back.obs["response"].astype(str)) == list(dataset.adata.obs["response"])
        assert list(back.obs["sample"].astype(str)) == list(dataset.adata.obs["sample"])
        assert back.uns["scdrugmap_demo"]["synthetic"]

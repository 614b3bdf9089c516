"""The 2-D map of predicted cells: principal components, fixed in sign, bounded in memory."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from scdrugmap.report import cell_map
from scdrugmap.report.cell_map import principal_map


def test_the_map_is_the_first_two_principal_components(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(500, 6)) * [5, 3, 1, 0.5, 0.2, 0.1]).astype(np.float32)
    monkeypatch.setattr(cell_map, "_BLOCK", 64)  # several blocks, as a large upload has
    coordinates, explained = principal_map(features)
    reference = PCA(n_components=2).fit(features.astype(np.float64))
    expected = reference.transform(features.astype(np.float64))
    signs = np.sign((coordinates * expected).sum(axis=0))
    np.testing.assert_allclose(coordinates, expected * signs, atol=1e-4)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, atol=1e-6)


def test_the_same_cells_draw_the_same_map_in_any_order() -> None:
    features = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
    order = np.random.default_rng(2).permutation(200)
    first, _ = principal_map(features)
    shuffled, _ = principal_map(features[order])
    np.testing.assert_allclose(shuffled, first[order], atol=1e-4)


def test_one_dimension_and_no_cells() -> None:
    coordinates, explained = principal_map(np.arange(5, dtype=np.float32)[:, None])
    assert coordinates.shape == (5, 2) and np.all(coordinates[:, 1] == 0)
    assert explained[0] == 1.0
    empty, _ = principal_map(np.empty((0, 3), dtype=np.float32))
    assert empty.shape == (0, 2)

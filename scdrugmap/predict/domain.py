"""The applicability domain of a predictor: how far a new cell lies from the cells it was
fitted on, in its embedding space.

A cell's `domain_score` is the mean distance to its k nearest training cells, given as
a percentile of the same distance of the training cells themselves (each measured
against the others, leaving itself out). A new cell from the training distribution
therefore scores uniformly between 0 and 100, and `in_domain` (score below
100 x `quantile`) holds for about `quantile` of such cells; a cell farther from every
training cell than nearly all training cells are from their neighbours is outside.

Built to stay fast at 10^6 training cells with bounded memory:

* the embedding is standardised with the training cells' mean and spread, then reduced
  to its first `DIMS` principal axes (float32): distances in 32 dimensions cost a tenth
  of those in 512, and a foundation model's embedding keeps most of its variance there;
* the reference is at most `MAX_REFERENCE` training cells drawn at random (seeded), and
  the calibration at most `MAX_CALIBRATION` of those, each measured against the rest of
  the reference. New cells are measured against the same reference, so both sides of the
  percentile are distances to the same set and the score stays calibrated however large
  the training set is (a 0.1% subpopulation still has 50 reference cells);
* exact k-NN by blocked matrix products (brute force, blocks of `BLOCK_MIB`, sklearn's
  parallel selection of the k smallest); no tree, no approximate index, nothing fitted
  but the rows themselves.

Kept as plain arrays in `domain.npz`, read with `allow_pickle=False`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.errors import InputError, StoreError

FILE = "domain.npz"
K = 10
DIMS = 32
MAX_REFERENCE = 50_000
MAX_CALIBRATION = 10_000
QUANTILE = 0.99
# A sample with fewer of its called cells in the domain than this is flagged.
MIN_FRACTION_IN_DOMAIN = 0.5
OUTSIDE = "outside the predictor's domain"
BLOCK_MIB = 64


def check_quantile(quantile: float) -> float:
    if not 0.0 < quantile <= 1.0:
        raise InputError(f"--domain-quantile {quantile}: give a share above 0 and at most 1")
    return float(quantile)


@dataclass(frozen=True)
class DomainIndex:
    """What scoring a new cell needs: the standardisation and axes, the reference cells in
    that space, and the sorted leave-one-out distances of the calibration cells."""

    mean: np.ndarray  # (dim,) float32
    scale: np.ndarray  # (dim,) float32
    axes: np.ndarray  # (dim, dims) float32
    reference: np.ndarray  # (n_reference, dims) float32
    calibration: np.ndarray  # (n_calibration,) float32, sorted
    k: int
    quantile: float

    def project(self, features: np.ndarray) -> np.ndarray:
        """Rows in the index's space."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise InputError(
                f"the embedding rows have {features.shape[-1]} columns; the predictor's "
                f"domain index was built on {len(self.mean)}"
            )
        return _project(features, self.mean, self.scale, self.axes)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Each row's mean distance to its k nearest reference cells."""
        return knn_mean_distance(self.project(features), self.reference, self.k)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Percentile (0-100) of each row's distance among the calibration distances."""
        rank = np.searchsorted(self.calibration, self.distances(features), side="left")
        return (100.0 * rank / len(self.calibration)).astype(np.float32)

    def in_domain(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) < 100.0 * self.quantile

    def summary(self) -> dict:
        """What the predictor's record says about its index."""
        return {
            "file": FILE,
            "k": self.k,
            "quantile": self.quantile,
            "dims": int(self.axes.shape[1]),
            "n_reference": len(self.reference),
            "n_calibration": len(self.calibration),
            "threshold_distance": float(np.quantile(self.calibration, self.quantile)),
        }

    def save(self, folder: Path) -> str:
        np.savez(
            folder / FILE,
            mean=self.mean,
            scale=self.scale,
            axes=self.axes,
            reference=self.reference,
            calibration=self.calibration,
            k=np.array(self.k),
            quantile=np.array(self.quantile),
        )
        return FILE


def load_domain(folder: Path) -> DomainIndex | None:
    """The index kept beside a predictor; None for one trained before indexes were kept."""
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return DomainIndex(
                arrays["mean"],
                arrays["scale"],
                arrays["axes"],
                arrays["reference"],
                arrays["calibration"],
                int(arrays["k"]),
                float(arrays["quantile"]),
            )
    except (KeyError, ValueError, OSError) as error:
        raise StoreError(
            f"{path}: unreadable domain index ({error}); retrain the predictor"
        ) from error


def build_domain(
    features: np.ndarray,
    *,
    quantile: float = QUANTILE,
    k: int = K,
    dims: int = DIMS,
    max_reference: int = MAX_REFERENCE,
    max_calibration: int = MAX_CALIBRATION,
    seed: int = 0,
) -> DomainIndex:
    """The domain index of a predictor's training cells (`features`: their embedding)."""
    features = np.asarray(features, dtype=np.float32)
    n_cells = len(features)
    if n_cells < k + 2:
        raise InputError(
            f"{n_cells} training cells are too few for a domain index of {k} neighbours"
        )
    rng = np.random.default_rng(seed)
    reference_rows = _subsample(rng, n_cells, max_reference)
    mean, scale = _moments(features)
    axes = _principal_axes(features[reference_rows], mean, scale, dims)
    reference = _project(features[reference_rows], mean, scale, axes)
    calibration_rows = _subsample(rng, len(reference), max_calibration)
    left_out = knn_mean_distance(reference[calibration_rows], reference, k, leave_one_out=True)
    calibration = np.sort(left_out).astype(np.float32)
    return DomainIndex(mean, scale, axes, reference, calibration, k, check_quantile(quantile))


def _project(
    features: np.ndarray, mean: np.ndarray, scale: np.ndarray, axes: np.ndarray
) -> np.ndarray:
    """Standardised rows on the index's axes, float32, a block at a time (no full-size
    temporary for a 10^6-row matrix)."""
    out = np.empty((len(features), axes.shape[1]), dtype=np.float32)
    for start in range(0, len(features), 65_536):
        block = np.asarray(features[start : start + 65_536], dtype=np.float32)
        out[start : start + len(block)] = ((block - mean) / scale) @ axes
    return out


def _subsample(rng: np.random.Generator, n: int, at_most: int) -> np.ndarray:
    if n <= at_most:
        return np.arange(n)
    return np.sort(rng.choice(n, size=at_most, replace=False))


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread per column, summed in float64 over blocks (no float64 copy of a
    10^6-row matrix); a constant column keeps scale 1."""
    total = np.zeros(features.shape[1])
    squares = np.zeros(features.shape[1])
    for start in range(0, len(features), 65_536):
        block = features[start : start + 65_536].astype(np.float64)
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    mean = total / len(features)
    spread = np.sqrt(np.maximum(squares / len(features) - mean**2, 0.0))
    spread[spread <= 1e-12] = 1.0
    return mean.astype(np.float32), spread.astype(np.float32)


def _principal_axes(
    sample: np.ndarray, mean: np.ndarray, scale: np.ndarray, dims: int
) -> np.ndarray:
    """The first `dims` principal axes of the standardised sample; all axes (the identity)
    when the embedding has no more columns than that."""
    width = sample.shape[1]
    if width <= dims:
        return np.eye(width, dtype=np.float32)
    standard = ((sample - mean) / scale).astype(np.float64)
    covariance = standard.T @ standard / max(len(standard) - 1, 1)
    values, vectors = np.linalg.eigh(covariance)
    axes = vectors[:, np.argsort(values)[::-1][:dims]]
    # The sign of an eigenvector is arbitrary; fixed so the same cells give the same index.
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), np.arange(dims)] < 0, -1.0, 1.0)
    return axes.astype(np.float32)


def knn_mean_distance(
    queries: np.ndarray,
    reference: np.ndarray,
    k: int,
    leave_one_out: bool = False,
    block_mib: int = BLOCK_MIB,
) -> np.ndarray:
    """Mean Euclidean distance of each query to its k nearest reference rows, exactly.

    `leave_one_out`: the queries are reference rows, each left out of its own neighbours
    (its nearest, at distance 0: with identical cells it drops one of several zeros, which
    is the same distances). Brute force by blocks of distance rows of at most `block_mib`
    (sklearn's parallel k-smallest selection over blocked matrix products), so memory is
    bounded whatever the sizes; the reference is plain rows, refitted at no cost.
    """
    import sklearn
    from sklearn.neighbors import NearestNeighbors

    wanted = min(k, len(reference) - leave_one_out)
    if wanted < 1:
        raise InputError("the domain index holds too few reference cells")
    search = NearestNeighbors(algorithm="brute").fit(reference)
    with sklearn.config_context(working_memory=block_mib):
        distances, _ = search.kneighbors(queries, n_neighbors=wanted + leave_one_out)
    return distances[:, int(leave_one_out) :].mean(axis=1).astype(np.float32)


def cell_domain(index: DomainIndex | None, features: np.ndarray, called: np.ndarray) -> dict:
    """Per-cell `domain_score` and `in_domain` columns: NaN and False for cells without a
    call (their embedding row stands for no genes at all); NaN and missing for every cell
    when the predictor keeps no index."""
    if index is None:
        missing = pd.array([pd.NA] * len(called), dtype="boolean")
        return {"domain_score": np.full(len(called), np.nan, np.float32), "in_domain": missing}
    scores = np.full(len(called), np.nan, dtype=np.float32)
    if called.any():
        scores[called] = index.scores(np.asarray(features)[called])
    return {"domain_score": scores, "in_domain": called & index.in_domain(scores)}


def sample_domain(cells: pd.DataFrame, called: pd.Series) -> pd.DataFrame:
    """Per sample: the share of its called cells in the domain (`fraction_in_domain`), and
    `domain_note` OUTSIDE where that share is below MIN_FRACTION_IN_DOMAIN (NaN and no note
    without called cells, or without an index)."""
    inside = cells["in_domain"].astype("boolean")
    grouped = pd.DataFrame(
        {"sample": cells["sample"], "inside": inside.where(called), "called": called}
    ).groupby("sample", sort=True)
    counted = grouped["inside"].count()
    share = (grouped["inside"].sum() / counted.where(counted > 0)).astype(float)
    return pd.DataFrame(
        {
            "sample": share.index,
            "fraction_in_domain": share.to_numpy(),
            "domain_note": np.where(share.to_numpy() < MIN_FRACTION_IN_DOMAIN, OUTSIDE, ""),
        }
    )

"""Our `evaluate` against the plain library on the same folds and matrix, quiet and loaded.

python -m benchmarks.classifier_overhead [--full] [--classifiers logreg,knn,lightgbm,mlp]
    [--repeats 3] [--conditions quiet,loaded]

The real PC9 cells (both samples: untreated sensitive, erlotinib survivors resistant)
are ingested and embedded with `pca` (50 dimensions) into a temporary store: the
seeded quarter in tests/data by default, the full files in ../shared with --full
(the figures of issue 19 are on the full files). For each classifier, "ours" is the
wall time of `store.evaluate(..., "pooled", n_folds=5)` in this process (selection,
split, fits, metrics and the catalog write); "plain" is the library alone fitting and
predicting the same 5 folds of the same matrix with the same parameters, one fold after
another with the library's default threads, as a user would write it (the MLP: a plain
torch loop with the head's recipe), and again on one thread; the ratio is ours over
the faster of the two. When `evaluate` calibrates each fold by inner folds, the plain
run makes the same inner fits. "loaded" repeats both with one busy process per
core, started here, bounded in time and always stopped. Each figure is the median of
`--repeats` runs, ours and plain alternating. The last line is the largest ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

FULL = Path(__file__).parents[1].parent / "shared" / "data" / "pc9_erlotinib"
QUARTER = Path(__file__).parents[1] / "tests" / "data" / "pc9_erlotinib"
CLASSIFIERS = ("logreg", "knn", "lightgbm", "mlp")
N_FOLDS = 5
# A busy process ends by itself after this long even if this script is killed outright.
BUSY_LIMIT_SECONDS = 1800
_BUSY_LOOP = (
    "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
)


@contextmanager
def busy_cores(n: int, seconds: float = BUSY_LIMIT_SECONDS) -> Iterator[None]:
    """`n` processes spinning on the CPU, stopped on leaving (error and Ctrl-C included)."""
    code = _BUSY_LOOP.format(seconds=seconds)
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            processes.append(subprocess.Popen([sys.executable, "-c", code]))
        time.sleep(1.0)  # let the scheduler spread them before anything is timed
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def _plain_mlp(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """The head's recipe written straight in torch: standardised inputs, 512-512 ReLU,
    AdamW (1e-4, weight decay 0.01), batch 128, 10 epochs and at least 300 steps, a 10%
    validation slice and patience 3 once those steps have run; torch's default threads."""
    import torch

    rng = np.random.default_rng(0)
    val = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(y_train == c))[: round(0.1 * (y_train == c).sum())]
        for c in (0, 1)
    ]))  # fmt: skip
    train = np.setdiff1d(np.arange(y_train.size), val)
    mean, scale = x_train[train].mean(0), x_train[train].std(0)
    scale[scale == 0] = 1
    x = torch.from_numpy((x_train - mean) / scale)
    y = torch.from_numpy(y_train.astype(np.int64))
    torch.manual_seed(0)
    width = x.shape[1]
    net = torch.nn.Sequential(
        torch.nn.Linear(width, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 2),
    )  # fmt: skip
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    steps_per_epoch = math.ceil(train.size / 128)
    best, best_state, stale, step = math.inf, None, 0, 0
    for _ in range(max(10, math.ceil(300 / steps_per_epoch))):
        order = torch.from_numpy(rng.permutation(train))
        for start in range(0, order.numel(), 128):
            rows = order[start : start + 128]
            loss = torch.nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
        with torch.no_grad():
            val_loss = float(torch.nn.functional.cross_entropy(net(x[val]), y[val]))
        if step < 300:
            continue
        if val_loss < best:
            best, stale = val_loss, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= 3:
                break
    net.load_state_dict(best_state)
    with torch.no_grad():
        test = torch.from_numpy(((x_test - mean) / scale).astype(np.float32))
        return torch.softmax(net(test), dim=1)[:, 1].numpy()


def _plain_estimator(name: str, n_jobs: int | None):
    """The library estimator with our recipe's parameters, on `n_jobs` threads (None: the
    library's default)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logreg":
        model = LogisticRegression(solver="lbfgs", max_iter=1000, C=1.0, random_state=0)
        return make_pipeline(StandardScaler(), model)
    if name == "knn":
        knn = KNeighborsClassifier(15, weights="distance", n_jobs=n_jobs)
        return make_pipeline(StandardScaler(), knn)
    from lightgbm import LGBMClassifier

    from scdrugmap.classify.classifiers import LIGHTGBM_PARAMS

    return LGBMClassifier(**LIGHTGBM_PARAMS, random_state=0, n_jobs=n_jobs)


def _fit_predict(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_jobs: int | None
) -> np.ndarray:
    if name == "mlp":
        return _plain_mlp(x_train, y_train, x_test)
    model = _plain_estimator(name, n_jobs).fit(x_train, y_train)
    return model.predict_proba(x_test)[:, 1]


def _inner_folds() -> int:
    """How many inner fits `evaluate` makes per fold to calibrate (0 where it does not)."""
    try:
        from scdrugmap.classify.calibration import CALIBRATION_FOLDS
    except ImportError:
        return 0
    return CALIBRATION_FOLDS


def _platt_by_inner_folds(
    name: str, x_train: np.ndarray, y_train: np.ndarray, n_inner: int, n_jobs: int | None
):
    """The plain form of calibrating on the training cells: out-of-fold probabilities
    from `n_inner` stratified folds, and a sigmoid of their logit fitted to the labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    raw = np.empty(y_train.size)
    inner = StratifiedKFold(n_inner, shuffle=True, random_state=0)
    for train, test in inner.split(x_train, y_train):
        raw[test] = _fit_predict(name, x_train[train], y_train[train], x_train[test], n_jobs)

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))[:, None]

    platt = LogisticRegression().fit(logit(raw), y_train)
    return lambda prob: platt.predict_proba(logit(prob))[:, 1]


def plain_run(
    name: str,
    features: np.ndarray,
    labels: np.ndarray,
    folds,
    n_inner: int,
    n_jobs: int | None = None,
) -> float:
    """The library alone over the folds (timed by the caller); its mean AUROC. With
    `n_inner` folds it also calibrates each fold as `evaluate` does: the same number of
    fits, done the plain way."""
    scores = []
    for fold in folds:
        x_train, y_train = features[fold.train], labels[fold.train]
        prob = _fit_predict(name, x_train, y_train, features[fold.test], n_jobs)
        if n_inner:
            _platt_by_inner_folds(name, x_train, y_train, n_inner, n_jobs)(prob)
        scores.append(roc_auc_score(labels[fold.test], prob))
    return float(np.mean(scores))


@contextmanager
def _one_thread() -> Iterator[None]:
    """The plain library held to one thread (BLAS, OpenMP, torch; LightGBM and kNN are
    also given n_jobs=1, since LightGBM sets OpenMP's count itself): the other way a
    user might run it, and often the faster one on a shared machine."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _timed(work: Callable[[], float]) -> tuple[float, float]:
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def _ours(store, name: str) -> float:
    record = store.evaluate("pca", name, "pooled", n_folds=N_FOLDS, seed=0)
    rows = record.results.query("scope == 'pooled' and metric == 'auroc'")
    return float(rows["value"].mean())


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def build_store(root: Path, cells: Path):
    from scdrugmap import Store
    from tests.store_builders import ingest_pc9

    store = Store(root / "store")
    ingest_pc9(store, cells)
    store.embed("pca", n_components=50)
    return store


def _exit_on_terminate(signum: int, frame) -> None:
    """SIGTERM as an exit, so that the busy processes are stopped by `busy_cores`."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help=f"the full PC9 files in {FULL}")
    parser.add_argument("--classifiers", default=",".join(CLASSIFIERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conditions", default="quiet,loaded")
    args = parser.parse_args()
    cells = FULL if args.full else QUARTER
    if not (cells / "Day11_control.txt.gz").is_file():
        raise SystemExit(f"no PC9 files in {cells}")
    from scdrugmap.classify.evaluate import embedding_left_out, select_and_split
    from scdrugmap.classify.selection import choose_for_embedding
    from scdrugmap.classify.threads import choose_policy, usable_cores

    root = Path(tempfile.mkdtemp(prefix="scdrugmap-overhead-"))
    ratios: list[float] = []
    try:
        store = build_store(root, cells)
        chosen = choose_for_embedding(store, "pca", None)
        selection = select_and_split(
            store,
            chosen.where,
            "pooled",
            n_folds=N_FOLDS,
            shots=5,
            seed=0,
            left_out=embedding_left_out(store, "pca"),
        )
        features = store.load_embedding("pca", selection.cells)
        folds = selection.plan.folds
        names = args.classifiers.split(",")
        n_inner = _inner_folds()
        print(
            f"PC9 {'full files' if args.full else 'quarter (tests/data)'}: "
            f"{features.shape[0]:,} cells x {features.shape[1]} pca dims, {len(folds)} pooled "
            f"folds; {usable_cores()} cores; policy {choose_policy(len(folds)).record()}; "
            + (f"plain calibrates too ({n_inner} inner fits a fold)" if n_inner else ""),
            flush=True,
        )
        for name in names:  # imports and first-call costs out of the timings
            _ours(store, name)
            plain_run(name, features, selection.labels, folds[:1], n_inner)
        for condition in args.conditions.split(","):
            busy = busy_cores(usable_cores()) if condition == "loaded" else nullcontext()
            with busy:
                print(f"{condition}: load average {_load()}", flush=True)
                for name in names:
                    ours, plain, single = [], [], []

                    def run_plain(n: str = name, n_jobs: int | None = None) -> float:
                        return plain_run(n, features, selection.labels, folds, n_inner, n_jobs)

                    for _ in range(args.repeats):
                        seconds, ours_auroc = _timed(lambda n=name: _ours(store, n))
                        ours.append(seconds)
                        seconds, plain_auroc = _timed(run_plain)
                        plain.append(seconds)
                        with _one_thread():
                            single.append(_timed(lambda n=name: run_plain(n, 1))[0])
                    best = min(statistics.median(plain), statistics.median(single))
                    ratio = statistics.median(ours) / best
                    ratios.append(ratio)
                    print(
                        f"{condition:<7} {name:<9} ours {statistics.median(ours):7.2f} s  "
                        f"plain {statistics.median(plain):7.2f} s (1 thread "
                        f"{statistics.median(single):7.2f} s)  ratio {ratio:5.2f}  "
                        f"(AUROC ours {ours_auroc:.3f}, plain {plain_auroc:.3f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"overhead max {max(ratios):.2f}")


if __name__ == "__main__":
    main()

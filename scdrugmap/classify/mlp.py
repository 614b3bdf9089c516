"""The scDrugMap classification head: an MLP trained in torch where it is installed
(CPU or GPU, `mlp_torch.py`), in numpy otherwise, so the CPU stage needs no torch.

input -> 512 -> ReLU -> 512 -> ReLU -> 2 logits, softmax cross-entropy, AdamW
with torch's update rule (decoupled weight decay on every parameter), He
initialisation. Weights are kept in torch's nn.Linear layout (out, in) so that
`state_dict()` maps one to one onto the published head.

Early stopping uses a seeded, stratified slice of the training cells; the
weights of the epoch with the lowest validation loss are the ones kept, so a
long run that overfits returns the model from before it overfitted.

Training length is counted in optimiser steps as well as epochs: at the
published learning rate (1e-4) ten epochs of a ~100-cell table are ten steps,
which leave the network near its random initialisation (on the SCAD tables
0.08-0.19 mean AUROC below logistic regression, and a different score for the
same cells with inverted labels). `min_steps` extends such runs; on large data
sets ten epochs are already hundreds of steps and training is unchanged.

Both trainers start from the same seeded weights and see the same batches in the same
order; only the steps differ (float rounding), and a fitted model is the same arrays
either way, predicted with numpy and saved as one safetensors file. torch is the
default because it is faster per step (benchmarks/mlp_backends.py); `backend="numpy"`
repeats a fit made before the torch trainer existed bit for bit.
"""

from __future__ import annotations

import math
from importlib.util import find_spec
from typing import NamedTuple, Protocol

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from scdrugmap.classify.labels import check_training_labels
from scdrugmap.errors import InputError

_LAYERS = ("fc1", "fc2", "fc3")
# "auto": torch where it is installed, numpy otherwise.
BACKENDS = ("auto", "torch", "numpy")
_PREDICT_CHUNK = 65536


def _features(X: np.ndarray) -> np.ndarray:
    features = np.asarray(X, dtype=np.float32)
    if features.ndim != 2:
        raise InputError(
            f"features must be a cells x dimensions matrix, got shape {features.shape}"
        )
    if not np.isfinite(features).all():
        raise InputError("features hold NaN or infinite values; re-embed the cells")
    return features


def _validation_positions(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """A stratified slice, leaving every class at least one training cell."""
    chosen = []
    for label in (0, 1):
        positions = np.flatnonzero(labels == label)
        n_val = 0
        if fraction > 0 and positions.size >= 2:
            n_val = min(max(round(fraction * positions.size), 1), positions.size - 1)
        chosen.append(rng.permutation(positions)[:n_val])
    return np.sort(np.concatenate(chosen))


def _forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, ...]:
    z1 = x @ params["fc1.weight"].T + params["fc1.bias"]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ params["fc2.weight"].T + params["fc2.bias"]
    a2 = np.maximum(z2, 0)
    logits = a2 @ params["fc3.weight"].T + params["fc3.bias"]
    return a1, a2, logits


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _loss(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    picked = _log_softmax(logits)[np.arange(labels.size), labels]
    return float(-(weights * picked).sum() / weights.sum())


class Batches(NamedTuple):
    """Standardised features, labels and sample weights of one side of the fit."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray


def _gradients(
    params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    a1, a2, logits = _forward(params, x)
    log_prob = _log_softmax(logits)
    total = weights.sum()
    loss = float(-(weights * log_prob[np.arange(labels.size), labels]).sum() / total)
    g3 = np.exp(log_prob)
    g3[np.arange(labels.size), labels] -= 1
    g3 *= (weights / total)[:, None]
    g2 = (g3 @ params["fc3.weight"]) * (a2 > 0)
    g1 = (g2 @ params["fc2.weight"]) * (a1 > 0)
    grads = {
        "fc3.weight": g3.T @ a2,
        "fc3.bias": g3.sum(axis=0),
        "fc2.weight": g2.T @ a1,
        "fc2.bias": g2.sum(axis=0),
        "fc1.weight": g1.T @ x,
        "fc1.bias": g1.sum(axis=0),
    }
    return loss, grads


class Trainer(Protocol):
    """What the epoch loop needs of a backend: steps, the validation loss, the weights."""

    def step(self, batch: np.ndarray) -> float: ...

    def validation_loss(self) -> float: ...

    def weights(self) -> dict[str, np.ndarray]: ...


class NumpyTrainer:
    """AdamW steps on the numpy network: hand-written backward pass, torch's update rule."""

    def __init__(
        self,
        params: dict[str, np.ndarray],
        train: Batches,
        val: Batches,
        *,
        learning_rate: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
    ) -> None:
        self.params = params
        self.train, self.val = train, val
        self.moment1 = {k: np.zeros_like(v) for k, v in params.items()}
        self.moment2 = {k: np.zeros_like(v) for k, v in params.items()}
        self.betas = betas
        self.lr, self.eps = np.float32(learning_rate), np.float32(eps)
        self.decay = np.float32(1 - learning_rate * weight_decay)
        self.steps = 0

    def step(self, batch: np.ndarray) -> float:
        """One update on the training rows `batch`; the batch's loss before it."""
        loss, grads = _gradients(
            self.params, self.train.x[batch], self.train.y[batch], self.train.w[batch]
        )
        beta1, beta2 = self.betas
        self.steps += 1
        correction1 = np.float32(1 - beta1**self.steps)
        correction2 = np.float32(math.sqrt(1 - beta2**self.steps))
        params, moment1, moment2 = self.params, self.moment1, self.moment2
        for key, grad in grads.items():
            moment1[key] = np.float32(beta1) * moment1[key] + np.float32(1 - beta1) * grad
            moment2[key] = np.float32(beta2) * moment2[key] + np.float32(1 - beta2) * (grad * grad)
            denom = np.sqrt(moment2[key]) / correction2 + self.eps
            params[key] = params[key] * self.decay - (self.lr / correction1) * moment1[key] / denom
        return loss

    def validation_loss(self) -> float:
        return _loss(_forward(self.params, self.val.x)[2], self.val.y, self.val.w)

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}


def torch_installed() -> bool:
    """Whether the torch trainer can run, found without importing torch (seconds)."""
    return find_spec("torch") is not None


class MLPHeadClassifier(ClassifierMixin, BaseEstimator):
    """Two hidden ReLU layers and a softmax over (resistant, sensitive).

    Training runs max(max_epochs, ceil(min_steps / steps_per_epoch)) epochs, where
    steps_per_epoch = ceil(training cells / batch_size): `max_epochs` is the length a
    large data set needs, `min_steps` the number of AdamW updates any data set gets,
    so that a small table is learned rather than left near its initialisation.

    Early stopping starts once `min_steps` steps have run: from the first epoch that
    ends at or after step `min_steps`, the epoch with the lowest validation loss is
    kept and `patience` epochs without improvement stop the run. Before that the
    validation slice neither stops training nor chooses the weights, because on a
    small table an epoch is one step and the slice a handful of cells: three noisy
    epochs would stop training after four steps, and keeping the weights of a lucky
    early epoch returns the same barely trained network (measured on the SCAD
    tables: with selection over the whole run, single folds kept epoch 2 or 8 and
    scored AUROC 0.6 and 0.83 where logistic regression averaged 0.95).

    300 steps was measured on the SCAD PLX4720 and Afatinib tables (108 and 120
    cells, 20 PCA components, stratified 5-fold, three split seeds): 100 steps left
    the MLP up to 0.04 mean AUROC below logistic regression, 300 within 0.03 on both
    tables and with inverted labels, 500 within 0.01 of 300 for two thirds more
    time (a 300-step fit of 512-wide layers is about a second). A large data set
    already runs hundreds of steps in its first epochs (14,000 cells: 99 steps an
    epoch), so there `min_steps` only keeps the first three epochs from being chosen
    or ending the run; measured there, the same epochs, weights and time as before.

    `backend` trains in "torch" or "numpy" ("auto": torch where installed); `device` is
    torch's ("auto": a GPU where there is one). Neither changes the saved form.
    """

    def __init__(
        self,
        hidden_size: int = 512,
        learning_rate: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        max_epochs: int = 10,
        min_steps: int = 300,
        batch_size: int = 128,
        validation_fraction: float = 0.1,
        patience: int = 3,
        class_weight: str | None = None,
        random_state: int = 0,
        backend: str = "auto",
        device: str = "auto",
    ) -> None:
        self.hidden_size = hidden_size
        self.learning_rate = learning_rate
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.random_state = random_state
        self.backend = backend
        self.device = device

    def _init_params(self, n_in: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        shapes = {"fc1": (self.hidden_size, n_in), "fc2": (self.hidden_size, self.hidden_size)}
        shapes["fc3"] = (2, self.hidden_size)
        params = {}
        for layer in _LAYERS:
            out_dim, in_dim = shapes[layer]
            scale = math.sqrt(2.0 / in_dim)
            params[f"{layer}.weight"] = (rng.standard_normal(shapes[layer]) * scale).astype(
                np.float32
            )
            params[f"{layer}.bias"] = np.zeros(out_dim, dtype=np.float32)
        return params

    def _sample_weights(self, labels: np.ndarray) -> np.ndarray:
        if self.class_weight is None:
            return np.ones(labels.size, dtype=np.float32)
        if self.class_weight != "balanced":
            raise InputError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        per_class = np.where(counts > 0, labels.size / (2 * np.maximum(counts, 1)), 0.0)
        return per_class[labels].astype(np.float32)

    def _n_epochs(self, n_train: int) -> int:
        """Epochs to run: `max_epochs`, or more when that is under `min_steps` steps."""
        if self.min_steps < 0:
            raise InputError(f"min_steps must be 0 or more, got {self.min_steps}")
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        return max(self.max_epochs, math.ceil(self.min_steps / steps_per_epoch))

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPHeadClassifier:
        """Train on one thread: a batch is 128 x 512, too small for threads to pay, and on
        a busy machine they spin against each other (a 300-step fit of a SCAD table: 11 s
        with the default threads on 2 loaded cores, 1.2 s with one)."""
        backend = self._backend()
        if backend == "numpy":
            with threadpool_limits(limits=1, user_api="blas"):
                return self._fit(X, y, backend)
        from scdrugmap.classify.mlp_torch import one_torch_thread

        with one_torch_thread():
            return self._fit(X, y, backend)

    def _backend(self) -> str:
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend != "auto":
            if self.backend == "torch" and not torch_installed():
                raise InputError("backend 'torch' needs torch: pip install torch")
            return self.backend
        return "torch" if torch_installed() else "numpy"

    def _trainer(
        self, backend: str, params: dict[str, np.ndarray], train: Batches, val: Batches
    ) -> Trainer:
        settings = {
            "learning_rate": self.learning_rate,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }
        if backend == "numpy":
            return NumpyTrainer(params, train, val, **settings)
        from scdrugmap.classify.mlp_torch import TorchTrainer

        return TorchTrainer(params, train, val, **settings, device=self.device)

    def _fit(self, X: np.ndarray, y: np.ndarray, backend: str) -> MLPHeadClassifier:
        features = _features(X)
        labels = check_training_labels(y).astype(np.int64)
        if features.shape[0] != labels.size:
            raise InputError(f"{features.shape[0]} feature rows but {labels.size} labels")
        rng = np.random.default_rng(self.random_state)
        val = _validation_positions(labels, self.validation_fraction, rng)
        train = np.setdiff1d(np.arange(labels.size), val)
        self.input_mean_ = features[train].mean(axis=0)
        scale = features[train].std(axis=0)
        self.input_scale_ = np.where(scale > 0, scale, 1).astype(np.float32)
        y_train, y_val = labels[train], labels[val]
        trainer = self._trainer(
            backend,
            self._init_params(features.shape[1], rng),
            Batches(self._standardise(features[train]), y_train, self._sample_weights(y_train)),
            Batches(self._standardise(features[val]), y_val, self._sample_weights(y_val)),
        )
        step = 0
        history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        best_loss, best_params, best_epoch, stale = math.inf, None, 0, 0
        for epoch in range(self._n_epochs(train.size)):
            order = rng.permutation(train.size)
            seen_loss = 0.0
            for start in range(0, order.size, self.batch_size):
                batch = order[start : start + self.batch_size]
                seen_loss += trainer.step(batch) * batch.size
                step += 1
            history["train_loss"].append(seen_loss / train.size)
            if val.size == 0:
                history["val_loss"].append(math.nan)
                best_epoch = epoch
                continue
            val_loss = trainer.validation_loss()
            history["val_loss"].append(val_loss)
            if step < self.min_steps:
                continue  # still warming up: the validation slice neither keeps nor stops
            if val_loss < best_loss:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_params = trainer.weights()
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.params_ = trainer.weights() if best_params is None else best_params
        self.best_epoch_ = best_epoch
        self.n_epochs_run_ = len(history["train_loss"])
        self.n_steps_run_ = step
        self.history_ = history
        self.backend_ = backend
        self.classes_ = np.array([0, 1], dtype=np.int64)
        self.n_features_in_ = features.shape[1]
        return self

    def _standardise(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.input_mean_) / self.input_scale_).astype(np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 2) float32 probabilities, columns in `classes_` order (resistant, sensitive)."""
        check_is_fitted(self, "params_")
        features = _features(X)
        if features.shape[1] != self.n_features_in_:
            raise InputError(
                f"features have {features.shape[1]} dimensions; the model was fitted on "
                f"{self.n_features_in_}"
            )
        chunks = [
            np.exp(_log_softmax(_forward(self.params_, self._standardise(part))[2]))
            for part in np.array_split(features, max(1, -(-features.shape[0] // _PREDICT_CHUNK)))
        ]
        return np.concatenate(chunks).astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything prediction needs, as contiguous arrays (safetensors-ready)."""
        check_is_fitted(self, "params_")
        state = {k: np.ascontiguousarray(v) for k, v in self.params_.items()}
        state["input_mean"] = np.ascontiguousarray(self.input_mean_, dtype=np.float32)
        state["input_scale"] = np.ascontiguousarray(self.input_scale_, dtype=np.float32)
        state["classes"] = self.classes_.copy()
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], **params) -> MLPHeadClassifier:
        """A fitted model from `state_dict()` output; `params` restore the training settings."""
        expected = {f"{layer}.{kind}" for layer in _LAYERS for kind in ("weight", "bias")}
        missing = sorted((expected | {"input_mean", "input_scale", "classes"}) - set(state))
        if missing:
            raise InputError(f"MLP state is missing {', '.join(missing)}")
        hidden, n_in = state["fc1.weight"].shape
        model = cls(**{"hidden_size": int(hidden), **params})
        model.params_ = {k: np.asarray(state[k], dtype=np.float32).copy() for k in expected}
        model.input_mean_ = np.asarray(state["input_mean"], dtype=np.float32).copy()
        model.input_scale_ = np.asarray(state["input_scale"], dtype=np.float32).copy()
        model.classes_ = np.asarray(state["classes"], dtype=np.int64).copy()
        model.n_features_in_ = int(n_in)
        return model

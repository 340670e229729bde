"""Hand-designed online learners and the scikit-learn sets the benchmarks stream, shared by
``bench/tabular.py`` and the claims matrix (``bench/claims.py``).

Both learners see one example at a time and predict it before its label is
shown (online accuracy), over a batch of independent episodes at once:

* :func:`logistic_regression`: softmax weights from zero, one SGD step on each
  example's cross-entropy after predicting it;
* :func:`nearest_class_mean`: predicts the class whose running mean of the
  inputs seen so far is closest (a class not seen yet is never predicted;
  before any label, class 0).

:func:`write_npz` writes a set as the ``npz:PATH`` file a user would give
(``x [N, ...]``, ``y [N]``), so the learners see what the project's own loader
makes of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)  # logistic regression's step sizes; the benchmarks report the best per set
SKLEARN_SETS = ("iris", "wine", "breast_cancer", "mixed_scales", "digits_images")


def dataset_arrays(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x [N, ...], y [N], subset streamed)`` of a scikit-learn set of :data:`SKLEARN_SETS`.

    ``mixed_scales``: ``make_classification`` (1,000 examples, 10 features, 3 classes) with its
    features rescaled by factors from 1e-2 to 1e3. ``digits_images``: 8x8 digits as images, streamed
    from their test split (the one ``vsml-digits``' meta-training did not use); the tabular sets from
    their training split (the larger one).
    """
    from sklearn import datasets  # noqa: PLC0415

    if name == "mixed_scales":
        x, y = datasets.make_classification(
            n_samples=1000, n_features=10, n_informative=5, n_redundant=2, n_classes=3, random_state=0
        )
        return x * 10.0 ** np.random.default_rng(0).uniform(-2, 3, size=10), y, "train"
    if name == "digits_images":
        digits = datasets.load_digits()
        return digits.images, digits.target, "test"
    if name not in SKLEARN_SETS:
        raise ValueError(f"unknown scikit-learn set {name!r}; one of {', '.join(SKLEARN_SETS)}")
    bunch = getattr(datasets, f"load_{name}")()
    return bunch.data, bunch.target, "train"


def write_npz(name: str, path: Path) -> tuple[Path, str]:
    """Writes set ``name`` to ``path`` as ``x``, ``y`` (once; atomically); returns ``(path, subset streamed)``."""
    x, y, subset = dataset_arrays(name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, y=y)
        tmp.replace(path)  # a reader never sees half a file
    return path, subset


def logistic_regression(inputs: np.ndarray, labels: np.ndarray, classes: int, lr: float) -> np.ndarray:
    """Online softmax regression, one SGD step per example after predicting it.

    ``inputs [E, T, ...]``, ``labels [E, T]`` -> predictions ``[E, T]``.
    """
    x = inputs.reshape(*inputs.shape[:2], -1).astype(np.float64)
    weights = np.zeros((x.shape[0], x.shape[2], classes))
    bias = np.zeros((x.shape[0], classes))
    predictions = np.empty(labels.shape, dtype=np.int64)
    rows = np.arange(x.shape[0])
    for t in range(x.shape[1]):
        logits = np.einsum("ed,edc->ec", x[:, t], weights) + bias
        predictions[:, t] = logits.argmax(-1)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        error = probs
        error[rows, labels[:, t]] -= 1.0  # d cross-entropy / d logits
        weights -= lr * x[:, t, :, None] * error[:, None, :]
        bias -= lr * error
    return predictions


def nearest_class_mean(inputs: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """Online nearest class mean: ``inputs [E, T, ...]``, ``labels [E, T]`` -> predictions ``[E, T]``."""
    x = inputs.reshape(*inputs.shape[:2], -1).astype(np.float64)
    sums = np.zeros((x.shape[0], classes, x.shape[2]))
    counts = np.zeros((x.shape[0], classes))
    predictions = np.empty(labels.shape, dtype=np.int64)
    rows = np.arange(x.shape[0])
    for t in range(x.shape[1]):
        means = sums / np.maximum(counts, 1)[..., None]
        distance = ((x[:, t, None, :] - means) ** 2).sum(-1)
        distance[counts == 0] = np.inf
        predictions[:, t] = np.where(counts.any(-1), distance.argmin(-1), 0)
        sums[rows, labels[:, t]] += x[:, t]
        counts[rows, labels[:, t]] += 1
    return predictions

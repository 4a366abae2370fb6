"""MNIST-shaped splits for the torch benchmarks: the real MNIST test split when the data directory
holds it, else Gaussian images with uniform labels (seeded), so a benchmark runs anywhere."""

from __future__ import annotations

import torch

from deep_lottery.data import Splits, TensorData, vision_splits
from deep_lottery.device import generator


def mnist_or_gaussian(n_train: int, n_eval: int) -> tuple[Splits, str]:
    """(splits with ``n_train`` training and ``n_eval`` validation and test images, source)."""
    try:
        splits = vision_splits("mnist", n_train=n_train, n_val=n_eval, n_test=n_eval,
                               test_split_only=True)
        return splits, "MNIST test split"
    except FileNotFoundError:
        g = generator(0)
        n = n_train + 2 * n_eval
        x = torch.randn(n, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        cut = n_train + n_eval
        return Splits(TensorData(x[:n_train], y[:n_train]), TensorData(x[n_train:cut], y[n_train:cut]),
                      TensorData(x[cut:], y[cut:]), 10), "Gaussian images"

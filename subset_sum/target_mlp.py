"""A bias-free ReLU MLP target F(x) = W_L relu(... relu(W_1 x)) in float64.

The strong-lottery-ticket construction (spec Sec. 2.2) approximates such a target; biases are
left out as in Pensia et al.'s fc2 target (784-500-10 without bias). Weights are stored like
torch ``Linear`` weights, (d_out, d_in). A trained target comes from the torch backend (the
strong-LTH experiment trains ``deep_lottery``'s ``mlp`` and converts its weights); this module
stays NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lottery_common import as_generator, check_array, check_float, check_int


@dataclass(frozen=True)
class TargetMLP:
    """Weights ``W_l`` of shape (d_l, d_{l-1}); ReLU after every layer but the last."""

    weights: tuple[np.ndarray, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        """(d_0, d_1, ..., d_L)."""
        return (self.weights[0].shape[1], *(w.shape[0] for w in self.weights))

    def hidden_states(self, X: np.ndarray) -> list[np.ndarray]:
        """[h_0 = X, h_1, ..., h_L] for the rows of X (h_L = logits, no ReLU)."""
        X = check_array("X", X, ndim=2)
        if X.shape[1] != self.widths[0]:
            raise ValueError(f"X has {X.shape[1]} columns, expected d_0 = {self.widths[0]}")
        states = [X]
        for layer, w in enumerate(self.weights):
            h = states[-1] @ w.T
            states.append(h if layer == len(self.weights) - 1 else np.maximum(h, 0.0))
        return states

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.hidden_states(X)[-1]


def random_target(widths: tuple[int, ...], seed: int | np.random.Generator,
                  operator_norm: float | None = None) -> TargetMLP:
    """Kaiming-normal weights N(0, 2 / d_{l-1}); optionally rescaled to a given operator norm."""
    if len(widths) < 2:
        raise ValueError(f"widths must list d_0..d_L with L >= 1, got {widths}")
    widths = tuple(check_int("width", w, minimum=1) for w in widths)
    rng = as_generator(seed)
    if operator_norm is not None:
        operator_norm = check_float("operator_norm", operator_norm, low=0.0, low_open=True)
    weights = []
    for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
        w = rng.normal(0.0, np.sqrt(2.0 / d_in), size=(d_out, d_in))
        if operator_norm is not None:
            w *= operator_norm / np.linalg.norm(w, 2)
        weights.append(w)
    return TargetMLP(tuple(weights))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))

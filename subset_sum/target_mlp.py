"""A bias-free ReLU MLP target F(x) = W_L relu(... relu(W_1 x)) and its plain-NumPy training.

The strong-lottery-ticket construction (spec Sec. 2.2) approximates such a target; biases are
left out as in Pensia et al.'s fc2 target (784-500-10 without bias). Training: softmax
cross-entropy, Adam (Kingma & Ba 2015, Algorithm 1) on mini-batches, Kaiming-normal init.
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


def loss_and_gradients(weights: tuple[np.ndarray, ...], X: np.ndarray,
                       labels: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """Mean softmax cross-entropy of the MLP and its gradients by backpropagation."""
    states = TargetMLP(tuple(weights)).hidden_states(X)
    logits = states[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(labels.size)
    loss = -float(log_prob[rows, labels].mean())
    delta = np.exp(log_prob)
    delta[rows, labels] -= 1.0
    delta /= labels.size
    grads: list[np.ndarray] = [np.empty(0)] * len(weights)
    for layer in range(len(weights) - 1, -1, -1):
        grads[layer] = delta.T @ states[layer]
        if layer > 0:
            delta = (delta @ weights[layer]) * (states[layer] > 0)
    return loss, grads


def train_mlp(X: np.ndarray, labels: np.ndarray, hidden: tuple[int, ...], *, epochs: int = 5,
              batch_size: int = 64, lr: float = 1e-3, seed: int | np.random.Generator = 0
              ) -> tuple[TargetMLP, list[float]]:
    """Train a bias-free ReLU MLP (d_0, *hidden, classes) with Adam; returns (model, losses)."""
    X = check_array("X", X, ndim=2)
    labels = check_array("labels", labels, shape=(X.shape[0],), dtype=np.int64)
    epochs = check_int("epochs", epochs, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    if labels.size == 0 or labels.min() < 0:
        raise ValueError("labels must be a non-empty array of integers >= 0")
    rng = as_generator(seed)
    classes = int(labels.max()) + 1
    weights = [w.copy() for w in random_target((X.shape[1], *hidden, classes), rng).weights]
    first = [np.zeros_like(w) for w in weights]
    second = [np.zeros_like(w) for w in weights]
    beta1, beta2, tiny = 0.9, 0.999, 1e-8
    step = 0
    losses = []
    for _ in range(epochs):
        order = rng.permutation(X.shape[0])
        total = 0.0
        for start in range(0, X.shape[0], batch_size):
            idx = order[start:start + batch_size]
            loss, grads = loss_and_gradients(tuple(weights), X[idx], labels[idx])
            total += loss * idx.size
            step += 1
            for layer, grad in enumerate(grads):
                first[layer] = beta1 * first[layer] + (1 - beta1) * grad
                second[layer] = beta2 * second[layer] + (1 - beta2) * grad**2
                m_hat = first[layer] / (1 - beta1**step)
                v_hat = second[layer] / (1 - beta2**step)
                weights[layer] -= lr * m_hat / (np.sqrt(v_hat) + tiny)
        losses.append(total / X.shape[0])
    return TargetMLP(tuple(weights)), losses


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))

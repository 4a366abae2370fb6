"""The strong-lottery-ticket construction (spec Sec. 2.1-2.2) and its experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deep_lottery.idx_files import write_idx
from experiments.pensia2020 import strong_lth_construction as slth
from subset_sum import brute_force, perturbed_subset_sum
from subset_sum.construction import (
    a_priori_bound,
    construct,
    random_network,
    unit_signs,
)
from subset_sum.target_mlp import TargetMLP, random_target

WIDTHS = (5, 4, 3)


def dense_forward(pruned, X):
    """Plain NumPy forward through G's 2L dense masked layers (no sparse matrices)."""
    n = pruned.network.n
    h = X
    depth = len(pruned.masks)
    for layer in range(depth):
        d_out, d_in, _ = pruned.masks[layer].shape
        first = np.zeros((2 * n * d_in, d_in))
        for j in range(d_in):
            first[j * 2 * n:(j + 1) * 2 * n, j] = unit_signs(n)
        second = ((pruned.network.V[layer] + pruned.perturbations[layer])
                  * pruned.masks[layer]).reshape(d_out, -1)
        h = np.maximum(h @ first.T, 0.0) @ second.T
        if layer < depth - 1:
            h = np.maximum(h, 0.0)
    return h


@pytest.fixture(scope="module")
def target():
    return random_target(WIDTHS, 11, operator_norm=1.0)


@pytest.mark.parametrize("eps", [0.0, 0.02])
@pytest.mark.parametrize("n", [3, 8])
def test_output_error_within_guaranteed_bound(target, n, eps):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(300, WIDTHS[0]))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # ||x|| = 1
    pruned = construct(target, random_network(WIDTHS, n, 4), eps)
    error = np.linalg.norm(target(X) - pruned(X), axis=1)
    bound = pruned.error_bound(X)
    assert np.all(error <= bound + 1e-12)
    assert np.max(bound) <= a_priori_bound(target, pruned.entry_errors, 1.0) + 1e-12
    np.testing.assert_allclose(pruned(X), dense_forward(pruned, X), atol=1e-12)


def test_spec_width_guarantee(target):
    """Spec Sec. 2.2: ||W_l|| <= 1, ||x|| <= 1, every entry error <= eta/(2L sqrt(d_l d_{l-1}))
    implies sup error <= eta."""
    pruned = construct(target, random_network(WIDTHS, 16, 2))
    L = len(WIDTHS) - 1
    per_layer = [float(e.max()) * 2 * L * np.sqrt(e.size) for e in pruned.entry_errors]
    eta = max(per_layer)
    assert eta <= 1.0
    assert a_priori_bound(target, pruned.entry_errors, 1.0) <= eta
    X = np.random.default_rng(0).normal(size=(500, WIDTHS[0]))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    assert np.max(np.linalg.norm(target(X) - pruned(X), axis=1)) <= eta


def test_each_weight_is_two_subset_sums(target):
    """g_ij(t) = t sum_{k<n} S V (t >= 0) and (-t) sum_{k>=n} S V (t < 0), each an exact optimum."""
    n = 7
    network = random_network(WIDTHS, n, 9)
    pruned = construct(target, network)
    w, v, mask = target.weights[0], network.V[0], pruned.masks[0]
    for i, j in [(0, 0), (2, 3), (3, 4)]:
        positive = brute_force(v[i, j, :n], w[i, j]).error
        negative = brute_force(v[i, j, n:], -w[i, j]).error
        assert pruned.entry_errors[0][i, j] == pytest.approx(max(positive, negative), abs=1e-12)
        for t in (0.7, -1.3):
            # one-input, one-output slice of layer 1: relu(u_k t) weighted by S V
            g = np.sum(mask[i, j] * v[i, j] * np.maximum(unit_signs(n) * t, 0.0))
            assert abs(g - w[i, j] * t) <= pruned.entry_errors[0][i, j] * abs(t) + 1e-12
    # layers after the first see post-ReLU inputs: their negative halves are pruned
    assert not pruned.masks[1][:, :, n:].any()


def test_perturbation_never_hurts_and_stays_in_radius(target):
    network = random_network(WIDTHS, 5, 1)
    plain = construct(target, network, 0.0)
    perturbed = construct(target, network, 0.05)
    for e0, e1, y, w, v, m in zip(plain.entry_errors, perturbed.entry_errors,
                                  perturbed.perturbations, target.weights, network.V,
                                  perturbed.masks, strict=True):
        assert np.all(e1 <= e0 + 1e-12)
        assert np.all(np.abs(y) <= 0.05 + 1e-15)
        i, j = 1, 2
        assert e1[i, j] == pytest.approx(
            perturbed_subset_sum(v[i, j, :5], w[i, j], 0.05).lower_bound, abs=1e-12)
        assert np.all(y[~m] == 0)


def test_nonnegative_input_prunes_first_layer_negative_half(target):
    network = random_network(WIDTHS, 4, 3)
    pruned = construct(target, network, nonnegative_input=True)
    assert not pruned.masks[0][:, :, 4:].any()
    X = np.random.default_rng(1).uniform(0, 1, size=(100, WIDTHS[0]))
    error = np.linalg.norm(target(X) - pruned(X), axis=1)
    assert np.all(error <= pruned.error_bound(X) + 1e-12)


def test_construct_rejects_mismatched_widths(target):
    with pytest.raises(ValueError):
        construct(target, random_network((5, 4, 2), 3, 0))
    with pytest.raises(ValueError):
        construct(target, random_network(WIDTHS, 3, 0), eps=-0.1)
    with pytest.raises(ValueError):
        random_network(WIDTHS, 0, 0)


def test_torch_trained_target_learns_a_separable_problem():
    """The strong-LTH target is trained by deep_lottery's loop (Adam, cross-entropy) and comes
    back as a float64 TargetMLP of the requested widths."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    X = np.abs(rng.normal(size=(400, 8)))
    labels = (X[:, 0] > X[:, 1]).astype(np.int64)
    model = slth.train_target(X, labels, X[:100], labels[:100], 16, epochs=20, lr=1e-2, seed=0)
    assert isinstance(model, TargetMLP) and model.widths == (8, 16, 2)
    assert all(w.dtype == np.float64 for w in model.weights)
    assert np.mean(np.argmax(model(X), 1) == labels) >= 0.9
    again = slth.train_target(X, labels, X[:100], labels[:100], 16, epochs=20, lr=1e-2, seed=0)
    for w, v in zip(model.weights, again.weights, strict=True):  # one seed, one target
        np.testing.assert_array_equal(w, v)


@pytest.mark.parametrize("hidden", [(5,), (7, 4)])
def test_conversion_to_target_mlp_reproduces_the_torch_logits(hidden):
    torch = pytest.importorskip("torch")
    from deep_lottery.models import build_model

    model = build_model("mlp", hidden=hidden, bias=False, init="kaiming_normal", seed=3,
                        num_classes=3, input_shape=(1, 1, 6))
    target = slth.to_target_mlp(model)
    assert target.widths == (6, *hidden, 3)
    X = np.random.default_rng(4).normal(size=(50, 6)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(X)).double().numpy()
    np.testing.assert_allclose(target(X.astype(np.float64)), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    with pytest.raises(ValueError, match="bias-free"):
        slth.to_target_mlp(build_model("mlp", hidden=hidden, bias=True, seed=3, num_classes=3,
                                       input_shape=(1, 1, 6)))


def _fake_mnist(folder, count=200):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    for k, label in enumerate(labels):  # a bright row per class, plus noise
        images[k, 2 + 2 * label, :] = 255
        images[k] += rng.integers(0, 30, (28, 28)).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)


def test_strong_lth_experiment_on_tiny_mnist(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path))
    slth.load_target.cache_clear()
    try:
        rows = []
        for n, eps, seed in [(2, 0.0, 1), (4, 0.0, 2), (6, 0.0, 3), (8, 0.0, 4),
                             (12, 0.0, 5), (14, 0.0, 6), (16, 0.0, 7),
                             (3, 0.01, 8), (3, 0.1, 9), (3, 0.0, 10)]:
            params = {"hidden": 4, "n": n, "eps": eps}
            rows.append({**params, **slth.run_cell(params, seed)})
    finally:
        slth.load_target.cache_clear()
    runs = pd.DataFrame(rows)
    assert set(runs["data"]) == {"mnist"}
    assert runs["bound_holds"].all()
    assert (runs["max_l2_error"] <= runs["max_bound"] + 1e-12).all()
    eps_rows = runs[runs["eps"] > 0]
    assert (eps_rows["max_error"] <= eps_rows["max_error_unperturbed"] + 1e-12).all()
    big = runs[runs["n"] == 16].iloc[0]
    assert big["agreement"] >= 0.95
    claims = slth.claims(runs)
    names = " ".join(c["claim"] for c in claims)
    assert "never exceeds" in names and "2^(-c n)" in names
    assert next(c for c in claims if "never exceeds" in c["claim"])["verdict"] == "pass"
    slth.plot(runs, tmp_path / "fig")
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").exists()


def test_strong_lth_falls_back_to_random_target(tmp_path, monkeypatch):
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path))  # no MNIST files here
    slth.load_target.cache_clear()
    try:
        target, inputs, labels, source = slth.load_target(3)
    finally:
        slth.load_target.cache_clear()
    assert source == "random" and target.widths == (784, 3, 10)
    np.testing.assert_array_equal(labels, np.argmax(target(inputs), axis=1))

"""PAC-Bayes bounds for pruned networks (Sakamoto & Sato 2022; spec sec. 1 "Validation (CPU)")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deep_lottery import pac_bayes as pb
from deep_lottery.data import TensorData
from deep_lottery.device import generator
from deep_lottery.masks import Mask
from deep_lottery.training import evaluate


def _inv_softplus(sigma: float) -> float:
    return math.log(math.expm1(sigma))


def _binary_entropy(p: float) -> float:
    return -p * math.log(p) - (1 - p) * math.log1p(-p)


def _random_mask(model: nn.Module, density: float, seed: int) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(p.shape, generator=g) < density
                 for n, p in model.named_parameters() if n.endswith("weight")})


def _mlp(seed: int = 0, d: int = 6, hidden: int = 12, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))


def _separable(n: int = 384, d: int = 6, k: int = 3, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return TensorData(x, (x @ torch.randn(k, d, generator=g).T).argmax(1))


def _ticket(steps: int = 200, seed: int = 0):
    """(model holding the unmasked init, mask, init state, trained masked state, data)."""
    model, data = _mlp(seed), _separable(seed=seed)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    mask = _random_mask(model, 0.6, seed)
    mask.apply(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(data.x), data.y)
        opt.zero_grad()
        loss.backward()
        mask.mask_gradients(model)
        opt.step()
        mask.apply(model)
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(init)
    return model, mask, init, trained, data


# --- scalar bounds ----------------------------------------------------------------------------
def test_worked_numbers_of_the_spec():
    assert pb.kl_inverse(0.05, 0.01) == pytest.approx(0.0869, abs=5e-5)
    assert pb.quadratic_bound(0.05, 0.01) == pytest.approx(0.0932, abs=5e-5)
    assert pb.pinsker_bound(0.05, 0.01) == pytest.approx(0.1207, abs=5e-5)
    assert pb.variational_bound(0.05, 0.01) == pb.quadratic_bound(0.05, 0.01)
    assert pb.complexity_term(10.0, 50_000, 0.01) == pytest.approx(
        (10 + math.log(2 * math.sqrt(50_000) / 0.01)) / 50_000, rel=1e-15)


def test_kl_inverse_is_below_both_relaxations_and_solves_kl_equals_b():
    q, b = np.meshgrid(np.linspace(0.0, 0.95, 20), np.geomspace(1e-5, 2.0, 25))
    inv = pb.kl_inverse(q, b)
    assert inv.shape == q.shape
    assert np.all(inv >= q)
    assert np.all(inv <= pb.quadratic_bound(q, b) + 1e-12)
    assert np.all(inv <= pb.pinsker_bound(q, b) + 1e-12)
    inside = inv < 1 - 1e-6  # where the supremum is (numerically) below 1, kl(q || p) = B
    assert inside.mean() > 0.9
    np.testing.assert_allclose(pb.kl_bernoulli(q[inside], inv[inside]), b[inside], rtol=1e-9)
    # a hair below the returned value the constraint still holds: it is the supremum
    assert np.all(pb.kl_bernoulli(q, np.maximum(q, inv - 1e-9)) <= b)


def test_kl_inverse_edge_cases_and_kl_values():
    assert pb.kl_inverse(0.0, 0.3) == pytest.approx(1 - math.exp(-0.3), abs=1e-12)
    assert pb.kl_inverse(0.2, 0.0) == pytest.approx(0.2, abs=1e-12)
    assert pb.kl_inverse(1.0, 0.5) == 1.0
    assert pb.kl_bernoulli(0.3, 0.3) == 0.0
    assert pb.kl_bernoulli(0.0, 0.5) == pytest.approx(math.log(2))
    assert pb.kl_bernoulli(0.2, 1.0) == math.inf
    assert pb.kl_bernoulli(0.1, 0.4) == pytest.approx(
        0.1 * math.log(0.1 / 0.4) + 0.9 * math.log(0.9 / 0.6), rel=1e-14)
    assert isinstance(pb.kl_inverse(0.1, 0.1), float)


# --- KL -----------------------------------------------------------------------------------------
def _slab_setup(d: int = 2000, density: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 1, bias=False).double()
    keep = torch.zeros(1, d, dtype=torch.bool)
    keep[0, torch.randperm(d, generator=g)[:round(density * d)]] = True
    mu0 = 0.05 * torch.randn(1, d, generator=g, dtype=torch.float64)
    mu = (mu0 + 0.03 * torch.randn(1, d, generator=g, dtype=torch.float64)) * keep
    setup = pb.make_setup(model, Mask({"weight": keep}), {"weight": mu0}, {"weight": mu})
    return setup, keep[0], mu0[0], mu[0]


def test_spike_and_slab_kl_matches_monte_carlo():
    """Spec (a): d = 2000, density 0.3, sigma = 0.02, oracle s^2, 4000 draws from Q; the log
    density ratio against the mixed (Lebesgue + atom at 0) measure."""
    sigma, draws = 0.02, 4000
    setup, keep, mu0, mu = _slab_setup()
    rho = {"weight": torch.full((1, 2000), _inv_softplus(sigma), dtype=torch.float64)}
    closed = float(pb.kl_divergence(setup, rho).total)

    lam = setup.density_p
    assert lam == pytest.approx(0.3)
    k_mu, k_mu0 = mu[keep].numpy(), mu0[keep].numpy()
    s2 = sigma ** 2 + (k_mu - k_mu0) ** 2
    w = k_mu + sigma * np.random.default_rng(1).standard_normal((draws, k_mu.size))
    log_q = -0.5 * ((w - k_mu) / sigma) ** 2 - math.log(sigma)
    log_p = math.log(lam) - 0.5 * (w - k_mu0) ** 2 / s2 - 0.5 * np.log(s2)
    n_pruned = int((~keep).sum())
    mc = float((log_q - log_p).sum(axis=1).mean()) + n_pruned * -math.log(1 - lam)
    assert closed == pytest.approx(mc, rel=1e-3)
    assert 1000 < closed < 3000


def test_kl_mask_is_d_times_binary_entropy_at_the_mask_density():
    setup, keep, _, _ = _slab_setup(d=1000, density=0.2)
    rho = {"weight": torch.full((1, 1000), -4.0, dtype=torch.float64)}
    kl = pb.kl_divergence(setup, rho)
    assert kl.mask == pytest.approx(1000 * _binary_entropy(0.2), rel=1e-12)
    assert float(kl.total) == pytest.approx(float(kl.gaussian) + kl.mask, rel=1e-12)
    # a prior mixture weight other than the density costs more (kl of Bernoullis >= 0)
    assert pb.mask_kl(200, 800, 0.5) > pb.mask_kl(200, 800, 0.2)
    assert pb.mask_kl(200, 800, 0.2) == pytest.approx(1000 * _binary_entropy(0.2))


def test_fixed_prior_variance_matches_torch_normal_kl_and_oracle_is_minimal():
    g = torch.Generator().manual_seed(3)
    mu, mu0 = torch.randn(50, generator=g, dtype=torch.float64), torch.zeros(50).double()
    sigma = 0.1 + torch.rand(50, generator=g, dtype=torch.float64)
    for s2 in (0.3, 1.0, 4.0):
        ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma),
                                                torch.distributions.Normal(mu0, math.sqrt(s2)))
        torch.testing.assert_close(pb.gaussian_kl(mu, mu0, sigma, s2), ref)
        assert bool((pb.gaussian_kl(mu, mu0, sigma) <= ref + 1e-12).all())
    oracle = pb.oracle_prior_variance(mu, mu0, sigma)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma),
                                            torch.distributions.Normal(mu0, oracle.sqrt()))
    torch.testing.assert_close(pb.gaussian_kl(mu, mu0, sigma), ref)


def test_gaussian_family_has_no_mask_term_and_keeps_pruned_init_in_the_kl():
    model, mask, init, trained, _ = _ticket(steps=20)
    rho = None
    terms = {}
    for family in pb.FAMILIES:
        setup = pb.make_setup(model, mask, init, trained, family=family)
        rho = pb.init_rho(setup)
        terms[family] = pb.kl_divergence(setup, rho)
    assert terms["gaussian"].mask == 0.0 and terms["gaussian_zero"].mask == 0.0
    assert terms["spike_and_slab"].mask > 0
    gaussian, slab = (float(terms[f].gaussian.detach()) for f in ("gaussian", "spike_and_slab"))
    assert gaussian > slab + 10
    # with a masked init as prior mean (the reference code's init_model.pth) pruned coordinates
    # cost nothing under the oracle prior, and the two Gaussian parts coincide
    masked_init = {k: v * mask[k] if k in mask else v for k, v in init.items()}
    setup = pb.make_setup(model, mask, masked_init, trained, family="gaussian")
    torch.testing.assert_close(pb.kl_divergence(setup, rho).gaussian,
                               terms["spike_and_slab"].gaussian)


def test_kl_gradient_vanishes_at_pruned_coordinates_only_in_spike_and_slab():
    model, mask, init, trained, _ = _ticket(steps=20)
    for family, zero_at_pruned in (("spike_and_slab", True), ("gaussian", False)):
        setup = pb.make_setup(model, mask, init, trained, family=family)
        rho = pb.init_rho(setup)
        pb.kl_divergence(setup, rho).total.backward()
        for name, keep in mask.items():
            grad = rho[name].grad
            assert bool((grad[keep] != 0).all())
            assert bool((grad[~keep] == 0).all()) == zero_at_pruned, (family, name)
        assert bool((rho["0.bias"].grad != 0).all())  # biases always carry a Gaussian


# --- the stochastic network -----------------------------------------------------------------------
def test_noise_never_touches_pruned_weights_in_spike_and_slab_draws():
    model, mask, init, trained, _ = _ticket(steps=5)
    for family in ("spike_and_slab", "gaussian"):
        setup = pb.make_setup(model, mask, init, trained, family=family)
        draw = pb.sample_parameters(setup, pb.init_rho(setup, -2.0), generator(0))
        for name, keep in mask.items():
            assert bool((draw[name][keep] != setup.mu[name][keep]).all())
            pruned = draw[name][~keep]
            assert bool((pruned == 0).all()) == (family == "spike_and_slab")
        assert bool((draw["2.bias"] != setup.mu["2.bias"]).all())


def test_vanishing_sigma_gives_the_deterministic_error_exactly():
    model, mask, init, _, data = _ticket(steps=0)  # an untrained ticket: error well above 0
    trained = {k: v + 0.3 * torch.randn_like(v) for k, v in init.items()}
    setup = pb.make_setup(model, mask, init, trained)
    reference = _mlp()
    reference.load_state_dict({k: setup.mu[k] for k in trained})
    error = 1 - evaluate(reference, data, "classification", torch.device("cpu"), amp=False)[1]
    assert 0.2 < error < 0.9
    assert pb.deterministic_error(model, setup, data) == pytest.approx(error, abs=1e-12)
    error = pb.deterministic_error(model, setup, data)
    tiny = pb.init_rho(setup, -100.0)
    assert pb.stochastic_error(model, setup, tiny, data, draws=3, seed=0) == error
    wide = pb.init_rho(setup, 1.0)
    assert pb.stochastic_error(model, setup, wide, data, draws=3, seed=0) != error


def test_bounded_log_loss():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 30.0, 0.0]])
    y = torch.tensor([0, 0])
    p0 = torch.softmax(logits[0], 0)[0]
    expected = (-math.log(float(p0)) + math.log(1e4)) / math.log(3) / 2  # 2nd one clamped
    assert float(pb.bounded_log_loss(logits, y)) == pytest.approx(expected, rel=1e-6)


# --- optimisation ---------------------------------------------------------------------------------
def test_optimize_bound_lowers_the_bound_and_leaves_the_model_alone():
    model, mask, init, trained, data = _ticket()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = pb.optimize_bound(model, mask, init, trained, data, epochs=4, lr=3.0,
                               batch_size=96, seed=0, error_draws=2,
                               test_data=TensorData(data.x[:64], data.y[:64]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training
    hist = result.history
    assert [r["epoch"] for r in hist] == [0, 1, 2, 3, 4]
    first, last = hist[0], hist[-1]
    assert last["bound"] < first["bound"] - 0.02
    assert last["kl"] < first["kl"]
    assert first["sigma_mean"] == pytest.approx(math.log1p(math.exp(-4.0)), rel=1e-5)
    assert last["sigma_mean"] > first["sigma_mean"]
    for r in hist:
        assert r["kl"] == pytest.approx(r["kl_gaussian"] + r["kl_mask"], rel=1e-12)
        assert r["kl_mask"] == pytest.approx(mask.num_total * _binary_entropy(mask.density))
        assert r["B"] == pytest.approx(pb.complexity_term(r["kl"], len(data), 0.01))
        assert r["risk"] <= r["bound_kl_inverse"] <= r["bound"]
        assert 0 <= r["test_error"] <= 1
    again = pb.optimize_bound(model, mask, init, trained, data, epochs=1, lr=3.0,
                              batch_size=96, seed=0, error_draws=2)
    assert again.history[1]["bound"] == hist[1]["bound"]  # seeded
    torch.testing.assert_close(result.sigma()["0.weight"], nn.functional.softplus(
        result.rho["0.weight"]))


def test_optimize_bound_in_train_mode_keeps_batchnorm_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2))
    x = torch.randn(64, 1, 6, 6)
    y = (x.mean((1, 2, 3)) > 0).long()
    model(x)  # running statistics away from their initial values
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mask = _random_mask(model, 0.5, 1)
    result = pb.optimize_bound(model, mask, state, state, TensorData(x, y), epochs=1,
                               seed=0, error_draws=1, train_mode=True, batch_size=32)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert math.isfinite(result.history[-1]["bound"])


# --- rigorous variant -------------------------------------------------------------------------
def test_rigorous_bound_terms_and_it_exceeds_the_plain_bound():
    m, n, kl, err = 50_000, 1000, 2000.0, 0.05
    r = pb.rigorous_bound(kl, err, m=m, n_draws=n, j=250)
    assert r["B_q"] == pytest.approx(kl + math.log(math.pi ** 2 * m / (6 * 0.025))
                                     + 2 * math.log(250))
    assert r["error_upper"] == pytest.approx(pb.kl_inverse(err, math.log(2 / 0.01) / n))
    assert r["error_upper"] - err == pytest.approx(0.0257, abs=5e-4)  # spec: 0.026 at n = 1000
    assert r["bound"] == pytest.approx(pb.kl_inverse(r["error_upper"], r["B_q"] / (m - 1)))
    assert r["confidence"] == pytest.approx(0.965)
    with_levels = pb.rigorous_bound(kl, err, m=m, n_draws=n, j=250, levels=15)
    assert with_levels["B_q"] - r["B_q"] == pytest.approx(math.log(16))
    assert with_levels["bound"] > r["bound"]
    for m in (100, 5000, 50_000):
        for kl in (0.0, 50.0, 5000.0):
            for err in (0.0, 0.02, 0.3):
                plain = pb.bound_terms(err, kl, m, 0.01)
                rig = pb.rigorous_bound(kl, err, m=m, n_draws=10_000, j=1)
                assert rig["bound"] >= plain["bound_kl_inverse"]


def test_rounded_rigorous_bound_keeps_the_better_grid_neighbour():
    assert pb.prior_variance_grid(100) == pytest.approx(0.1 / math.e)
    assert pb.grid_index(pb.prior_variance_grid(37)) == pytest.approx(37)
    lam = pb.prior_variance_grid(40) * 0.997  # j = 40.3: neighbours 40 and 41
    calls = []

    def kl_at(v: float) -> float:
        calls.append(v)
        return 1e4 * abs(math.log(v / pb.prior_variance_grid(41)))  # best at j = 41

    best = pb.rounded_rigorous_bound(kl_at, lam, 0.1, m=10_000, n_draws=100)
    assert len(calls) == 2 and best["j"] == 41.0 and best["prior_var"] == calls[1]


def test_kl_at_prior_variance_uses_the_shared_variance():
    setup, *_ = _slab_setup(d=200)
    rho = {"weight": torch.full((1, 200), -3.0, dtype=torch.float64)}
    kl_at = pb.kl_at_prior_variance(setup, rho)
    oracle = float(pb.kl_divergence(setup, rho).total)
    assert kl_at(0.01) > oracle and kl_at(0.1) > oracle and kl_at(0.01) != kl_at(0.1)


# --- sharpness and distances --------------------------------------------------------------------
def test_expected_sharpness_is_half_sigma2_trace_of_the_masked_hessian():
    g = torch.Generator().manual_seed(0)
    n, d, sigma = 200, 8, 0.05
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        n, generator=g, dtype=torch.float64)
    a = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    theta = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]  # the MSE minimum
    model = nn.Linear(d, 1).double()
    keep = torch.tensor([[True, False, True, True, False, True, True, False]])
    theta = theta * torch.cat([keep[0], torch.tensor([True])])
    # refit the kept coordinates so that theta is the minimum of the masked problem
    cols = torch.cat([keep[0], torch.tensor([True])])
    theta[cols] = torch.linalg.lstsq(a[:, cols], y[:, None]).solution[:, 0]
    state = {"weight": theta[:d].view(1, d).clone(), "bias": theta[d:].clone()}
    hessian = 2 * a.T @ a / n
    expected = 0.5 * sigma ** 2 * float(hessian.diagonal()[cols].sum())
    data = TensorData(x, y)
    s = pb.expected_sharpness(model, state, Mask({"weight": keep}), data, sigma, draws=3000,
                              seed=0, loss="mse")
    assert s == pytest.approx(expected, rel=0.04)
    dense = pb.expected_sharpness(model, state, Mask({"weight": torch.ones_like(keep)}), data,
                                  sigma, draws=3000, seed=0, loss="mse")
    assert dense == pytest.approx(0.5 * sigma ** 2 * float(hessian.diagonal().sum()), rel=0.04)
    assert pb.expected_sharpness(model, state, Mask({"weight": keep}), data, 0.0, seed=0,
                                 loss="mse") == 0.0


def test_expected_sharpness_on_a_classifier():
    model, mask, _, trained, data = _ticket(steps=100)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for loss in ("error", "ce"):
        assert pb.expected_sharpness(model, trained, mask, data, 0.0, draws=2, seed=0,
                                     loss=loss) == 0.0
        assert pb.expected_sharpness(model, trained, mask, data, 0.5, draws=5, seed=0,
                                     loss=loss) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ticket_distances():
    mask = Mask({"w": torch.tensor([True, False, True, True])})
    init = {"w": torch.tensor([1.0, 5.0, 0.0, 2.0])}
    trained = {"w": torch.tensor([4.0, 9.0, 0.0, 2.0])}
    dist = pb.ticket_distances(trained, init, mask)
    assert dist["l2_dist"] == pytest.approx(3.0)
    assert dist["l2_norm"] == pytest.approx(math.sqrt(20.0))
    assert dist["l2_dist_normalized"] == pytest.approx(3.0 / math.sqrt(3))
    assert dist["l2_norm_normalized"] == pytest.approx(math.sqrt(20.0 / 3))


# --- bad input ----------------------------------------------------------------------------------
def _bad_calls():
    model, mask, init, trained, data = _ticket(steps=0)
    opts = {"epochs": 1, "seed": 0}
    return [
        lambda: pb.complexity_term(1.0, 100, 0.0),
        lambda: pb.complexity_term(1.0, 100, 1.0),
        lambda: pb.complexity_term(1.0, 0, 0.1),
        lambda: pb.kl_inverse(1.2, 0.1),
        lambda: pb.kl_inverse(0.1, -0.1),
        lambda: pb.kl_bernoulli(np.array([0.1, np.nan]), 0.5),
        lambda: pb.quadratic_bound(0.1, -1.0),
        lambda: pb.optimize_bound(model, mask, init, trained, data, delta=1.5, **opts),
        lambda: pb.optimize_bound(model, mask, init, trained, data, family="laplace", **opts),
        lambda: pb.make_setup(model, mask, init, trained, density_p=0.0),
        lambda: pb.make_setup(model, mask, {}, trained),
        lambda: pb.expected_sharpness(model, trained, mask, data, -0.1, seed=0),
        lambda: pb.expected_sharpness(model, trained, mask, data, 0.1, seed=0, loss="mse"),
        lambda: pb.rigorous_bound(10.0, 0.1, m=100, n_draws=10, j=0),
        lambda: pb.rigorous_bound(10.0, 0.1, m=100, n_draws=10, j=1, delta_prime=0.0),
    ]


def test_bad_inputs_raise_one_line_value_errors():
    for call in _bad_calls():
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value)

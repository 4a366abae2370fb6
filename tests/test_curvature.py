"""Hessian measurements restricted to a mask, ``M H M`` (spec sec. 3 "Validate (CPU)"): products
against a known quadratic and against ``torch.autograd.functional.hessian`` of a tiny MLP,
Hutchinson's trace, power iteration with deflation, Lanczos / SLQ, the 1-D landscape, eval mode
and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deep_lottery.curvature import (
    HVP_MODES,
    HessianOperator,
    gradient_direction,
    hutchinson_trace,
    lanczos,
    loss_along,
    per_layer_trace,
    rademacher,
    random_direction,
    slq_density,
    smoothed_density,
    top_eigenvalues,
)
from deep_lottery.data import TensorData
from deep_lottery.masks import Mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 50
MODES = [m for m in HVP_MODES if m != "auto"]


# --- the quadratic 0.5 w^T A w ------------------------------------------------------------------

@pytest.fixture(scope="module")
def quad() -> dict:
    """A = Q diag(lam) Q^T, lam ~ U[0.1, 10] with one eigenvalue 20, Q random orthogonal; the
    parameters are split into two tensors ("a": 30 entries, "b": 4x5) to exercise the layout."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    lam = 0.1 + 9.9 * torch.rand(N, generator=g, dtype=torch.float64)
    lam[0] = 20.0
    a = q @ torch.diag(lam) @ q.T
    a = (a + a.T) / 2
    w = torch.randn(N, generator=g, dtype=torch.float64)
    params = {"a": w[:30].clone(), "b": w[30:].reshape(4, 5).clone()}
    keep = torch.rand(N, generator=g) < 0.6
    keep[0] = True
    mask = {"a": keep[:30], "b": keep[30:].reshape(4, 5)}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([p["a"], p["b"].reshape(-1)])
        return 0.5 * flat @ a @ flat

    return {"A": a, "params": params, "keep": keep, "mask": mask, "loss": loss, "w": w}


def _op(quad: dict, masked: bool = False, hvp: str = "auto") -> HessianOperator:
    return HessianOperator(quad["loss"], quad["params"], quad["mask"] if masked else None,
                           hvp=hvp)


@pytest.mark.parametrize("hvp", MODES)
def test_hvp_of_the_quadratic_is_a_v(quad: dict, hvp: str) -> None:
    op = _op(quad, hvp=hvp)
    v = torch.randn(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(v), quad["A"] @ v, atol=1e-5 * float(quad["A"].norm()))
    np.testing.assert_allclose(op.matvec(op.unflatten(v)), quad["A"] @ v, atol=1e-10)
    assert op.dim == op.size == N
    assert op.products == 2


@pytest.mark.parametrize("hvp", MODES)
def test_masked_hvp_is_m_a_m_v_and_zero_on_pruned(quad: dict, hvp: str) -> None:
    op = _op(quad, masked=True, hvp=hvp)
    m = quad["keep"].double()
    v = torch.randn(N, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    hv = op.matvec(v)
    np.testing.assert_allclose(hv, m * (quad["A"] @ (m * v)), atol=1e-10)
    assert bool((hv[~quad["keep"]] == 0).all())
    assert op.dim == int(quad["keep"].sum())
    # the point is the sub-network m * w, and the gradient is the masked A (m w)
    np.testing.assert_array_equal(op.point, m * quad["w"])
    np.testing.assert_allclose(op.gradient(), m * (quad["A"] @ (m * quad["w"])), atol=1e-10)
    assert op.loss() == pytest.approx(float(0.5 * (m * quad["w"]) @ quad["A"] @ (m * quad["w"])))


def test_hutchinson_matches_the_trace_within_its_standard_error(quad: dict) -> None:
    a, keep = quad["A"], quad["keep"]
    for masked, exact in ((False, float(a.trace())), (True, float(a.diagonal()[keep].sum()))):
        r = hutchinson_trace(_op(quad, masked), max_probes=2000, tol=None, seed=0)
        assert r.probes == len(r.samples) == 2000 and not r.converged
        assert abs(r.trace - exact) < 0.03 * exact
        assert abs(r.trace - exact) < 4 * r.stderr
        assert r.stderr == pytest.approx(np.std(r.samples, ddof=1) / math.sqrt(2000))


def test_hutchinson_stopping_rule_and_seeded_probes(quad: dict) -> None:
    op = _op(quad, masked=True)
    r = hutchinson_trace(op, max_probes=500, tol=1e-2, min_probes=5, seed=3)
    assert r.converged and 5 <= r.probes < 500
    means = np.cumsum(r.samples) / np.arange(1, r.probes + 1)
    assert abs(means[-1] - means[-2]) / (abs(means[-2]) + 1e-6) < 1e-2
    earlier = np.abs(np.diff(means[4:-1])) / (np.abs(means[4:-2]) + 1e-6)
    assert bool((earlier >= 1e-2).all())  # it stopped at the first chance
    fixed = hutchinson_trace(op, max_probes=r.probes + 3, tol=None, seed=3)
    assert fixed.samples[:r.probes] == r.samples  # the same probes, drawn from the seed
    assert hutchinson_trace(op, max_probes=4, tol=None, seed=4).samples != fixed.samples[:4]
    v = rademacher(op, 7)
    assert bool((v.abs() == quad["keep"].double()).all())  # +-1 on kept, 0 on pruned


def test_per_layer_trace_is_the_trace_of_each_diagonal_block(quad: dict) -> None:
    a, keep = quad["A"], quad["keep"]
    op = _op(quad, masked=True)
    traces = per_layer_trace(op, max_probes=600, tol=None, seed=0)
    blocks = {"a": slice(0, 30), "b": slice(30, N)}
    assert list(traces) == ["a", "b"]
    for name, part in blocks.items():
        exact = float(a.diagonal()[part][keep[part]].sum())
        assert abs(traces[name].trace - exact) < 4 * traces[name].stderr + 1e-9


def test_power_iteration_finds_the_top_eigenpairs(quad: dict) -> None:
    a = quad["A"]
    lam = torch.linalg.eigvalsh(a)
    values, vectors = top_eigenvalues(_op(quad), k=2, seed=0)
    assert abs(values[0] - float(lam[-1])) < 1e-3 * float(lam[-1])
    assert abs(values[1] - float(lam[-2])) < 1e-2 * float(lam[-2])
    assert float(vectors[0] @ vectors[1]) == pytest.approx(0.0, abs=1e-8)
    for v in vectors:
        assert float(v.norm()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(a @ vectors[0], values[0] * vectors[0], atol=0.05)


def test_masked_power_iteration_is_the_top_eigenvalue_of_the_kept_block(quad: dict) -> None:
    keep = quad["keep"]
    top = float(torch.linalg.eigvalsh(quad["A"][keep][:, keep])[-1])
    values, (v,) = top_eigenvalues(_op(quad, masked=True), k=1, seed=1)
    assert abs(values[0] - top) < 1e-3 * top
    assert bool((v[~keep] == 0).all())


def test_lanczos_is_a_projection_onto_an_orthonormal_basis(quad: dict) -> None:
    a = quad["A"]
    lam = torch.linalg.eigvalsh(a)
    res = lanczos(_op(quad), 30, seed=0)
    assert len(res.alphas) == 30 and len(res.betas) == 29
    q = res.basis
    np.testing.assert_allclose(q @ q.T, torch.eye(30, dtype=torch.float64), atol=1e-10)
    np.testing.assert_allclose(q @ a @ q.T, res.tridiagonal(), atol=1e-8)
    nodes = torch.linalg.eigvalsh(res.tridiagonal())
    assert float(nodes[-1]) == pytest.approx(float(lam[-1]), rel=1e-8)
    assert float(nodes[0]) == pytest.approx(float(lam[0]), rel=1e-2)
    plain = lanczos(_op(quad), 10, seed=0, reorthogonalize=False)
    assert plain.basis is None
    np.testing.assert_allclose(plain.alphas, res.alphas[:10], rtol=1e-6)


def test_lanczos_stops_when_the_kept_subspace_is_exhausted(quad: dict) -> None:
    keep = quad["keep"]
    op = _op(quad, masked=True)
    nodes, weights = slq_density(op, steps=100, seed=0)
    assert len(nodes) == op.dim  # full Krylov space of the kept block: exact spectrum
    np.testing.assert_allclose(nodes, torch.linalg.eigvalsh(quad["A"][keep][:, keep]), atol=1e-8)
    assert float(weights.sum()) == pytest.approx(1.0)


def test_slq_weights_and_first_moment(quad: dict) -> None:
    """sum w = 1 and sum w lambda = q^T A q / |q|^2 for a Rademacher q, whose mean is tr(A)/N
    and whose standard deviation is sqrt(2 sum_{i != j} A_ij^2) / N; 20 runs."""
    a, runs = quad["A"], 20
    nodes, weights = slq_density(_op(quad), steps=100, runs=runs, seed=0)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((weights >= 0).all()) and len(nodes) == runs * N
    off = a - torch.diag(a.diagonal())
    sd = math.sqrt(2 * float((off ** 2).sum())) / N / math.sqrt(runs)
    assert abs(float(nodes @ weights) - float(a.trace()) / N) < 4 * sd
    lam = torch.linalg.eigvalsh(a)
    assert float(lam[0]) - 1e-8 <= float(nodes.min()) <= float(nodes.max()) <= float(lam[-1]) + 1e-8


def _pyhessian_density(eigenvalues: list, weights: list, num_bins: int, sigma_squared: float,
                       overhead: float) -> tuple[np.ndarray, np.ndarray]:
    """PyHessian's ``density_plot.density_generate`` (one run), loops and all."""
    eigenvalues, weights = np.array([eigenvalues]), np.array([weights])
    lambda_max = np.mean(np.max(eigenvalues, axis=1), axis=0) + overhead
    lambda_min = np.mean(np.min(eigenvalues, axis=1), axis=0) - overhead
    grids = np.linspace(lambda_min, lambda_max, num=num_bins)
    sigma = sigma_squared * max(1, (lambda_max - lambda_min))
    density = np.zeros(num_bins)
    for j in range(num_bins):
        kernel = np.exp(-(grids[j] - eigenvalues[0]) ** 2 / (2.0 * sigma)) / np.sqrt(2 * np.pi
                                                                                    * sigma)
        density[j] = np.sum(kernel * weights[0])
    return density / (np.sum(density) * (grids[1] - grids[0])), grids


def test_smoothed_density_matches_pyhessian() -> None:
    nodes = torch.tensor([-0.3, 0.1, 0.5, 2.0, 7.5], dtype=torch.float64)
    weights = torch.tensor([0.1, 0.4, 0.3, 0.15, 0.05], dtype=torch.float64)
    grid, density = smoothed_density(nodes, weights, num_bins=3000, sigma2=1e-3)
    ref, ref_grid = _pyhessian_density(nodes.tolist(), weights.tolist(), 3000, 1e-3, 0.01)
    np.testing.assert_allclose(grid, ref_grid, rtol=1e-12)
    np.testing.assert_allclose(density, ref, rtol=1e-9, atol=1e-12)
    assert float(density.sum() * (grid[1] - grid[0])) == pytest.approx(1.0)


# --- a tiny MLP against torch.autograd.functional.hessian --------------------------------------

def _mlp() -> tuple[nn.Module, TensorData]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(1)
    data = TensorData(torch.randn(7, 4, generator=g, dtype=torch.float64),
                      torch.randint(0, 3, (7,), generator=g))
    return model, data


def _dense_hessian(model: nn.Module, data: TensorData) -> tuple[torch.Tensor, list[str]]:
    """The Hessian of the mean cross-entropy over all of ``data``, flattened in parameter order."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = flat.split([s.numel() for s in shapes])
        p = {n: t.view(s) for n, t, s in zip(names, parts, shapes)}
        out = torch.func.functional_call(model, p, (data.x,))
        return nn.functional.cross_entropy(out, data.y)

    return torch.autograd.functional.hessian(f, flat0), names


@pytest.mark.parametrize("hvp", HVP_MODES)
def test_mlp_hvp_matches_autograd_hessian(hvp: str) -> None:
    model, data = _mlp()
    h, _ = _dense_hessian(model, data)
    v = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    op = HessianOperator.from_model(model, data, "classification", batch_size=3, hvp=hvp)
    assert len(op.terms) == 3  # batches of 3, 3 and 1, weighted 3/7, 3/7, 1/7
    np.testing.assert_allclose(op.matvec(v), h @ v, rtol=1e-9, atol=1e-12)
    # with a mask (biases never pruned): M H M v; the mask was applied to the weights first
    g = torch.Generator().manual_seed(3)
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()
                 if n.endswith("weight")})
    mask.apply(model)
    h, _ = _dense_hessian(model, data)
    op = HessianOperator.from_model(model, data, "classification", mask, batch_size=3, hvp=hvp)
    m = op.mask_vector
    assert int(m.sum()) == op.dim < op.size
    np.testing.assert_allclose(op.matvec(v), m * (h @ (m * v)), rtol=1e-9, atol=1e-12)


def test_from_model_loss_and_gradient_at_the_sub_network() -> None:
    model, data = _mlp()
    mask = Mask({"0.weight": torch.rand(5, 4, generator=torch.Generator().manual_seed(4)) < 0.5})
    op = HessianOperator.from_model(model, data, "classification", mask, batch_size=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masked = {n: p.clone() for n, p in before.items()}
    masked["0.weight"] *= mask["0.weight"]
    out = torch.func.functional_call(model, masked, (data.x,))
    exact = nn.functional.cross_entropy(out, data.y)
    assert op.loss() == pytest.approx(float(exact), rel=1e-12)
    leaf = {n: t.clone().requires_grad_(True) for n, t in masked.items()}
    loss = nn.functional.cross_entropy(torch.func.functional_call(model, leaf, (data.x,)), data.y)
    g = torch.autograd.grad(loss, list(leaf.values()))
    g_flat = op.flatten(dict(zip(leaf, g)))
    np.testing.assert_allclose(op.gradient(), op.mask_vector * g_flat, rtol=1e-10, atol=1e-14)
    for n, p in model.named_parameters():  # the model itself was not masked
        assert torch.equal(p, before[n])
    unmasked_point = HessianOperator.from_model(model, data, "classification", mask,
                                                at_masked_point=False)
    np.testing.assert_array_equal(unmasked_point.point, op.flatten(before))


# --- eval mode and the model left alone --------------------------------------------------------

def _bn_model() -> tuple[nn.Module, TensorData]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Dropout(0.5), nn.Linear(3 * 4 * 4, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 1, 6, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(3):  # non-trivial running statistics
            model(2.0 * x + 1.0)
    return model, TensorData(x, torch.randint(0, 3, (16,), generator=g))


@pytest.mark.parametrize("hvp", MODES)
def test_batchnorm_and_dropout_model_is_measured_in_eval_mode_and_left_unchanged(hvp: str
                                                                                  ) -> None:
    model, data = _bn_model()
    model.train()
    model[4].eval()  # a mixed flag, restored as it was
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    op = HessianOperator.from_model(model, data, "classification", batch_size=8, hvp=hvp)
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    first, second = op.matvec(v), op.matvec(v)
    np.testing.assert_array_equal(first, second)
    r1 = hutchinson_trace(op, max_probes=3, tol=None, seed=0)
    r2 = hutchinson_trace(op, max_probes=3, tol=None, seed=0)
    assert r1.samples == r2.samples
    assert [m.training for m in model.modules()] == flags
    for k, t in model.state_dict().items():
        assert torch.equal(t, state[k]), k
    # the same as the Hessian of the model in eval mode (running statistics, no dropout)
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def f(flat: torch.Tensor) -> torch.Tensor:
        p = {n: t.view(s) for n, t, s in zip(names, flat.split([s.numel() for s in shapes]),
                                             shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(model, p, (data.x,)),
                                           data.y)

    h = torch.autograd.functional.hessian(f, op.point)
    np.testing.assert_allclose(first, h @ v, rtol=1e-8, atol=1e-12)


# --- 1-D landscape and directions --------------------------------------------------------------

def test_loss_along_and_unit_masked_directions(quad: dict) -> None:
    a, keep = quad["A"], quad["keep"]
    op = _op(quad, masked=True)
    top = top_eigenvalues(op, seed=0)[1][0]
    for d in (random_direction(op, seed=0), gradient_direction(op), top):
        assert float(d.norm()) == pytest.approx(1.0, abs=1e-12)
        assert bool((d[~keep] == 0).all())
    ts = torch.linspace(-0.5, 0.5, 21, dtype=torch.float64)
    d = random_direction(op, seed=1)
    losses = loss_along(op, d, ts)
    assert float(losses[10]) == op.loss()  # t = 0
    p = op.point
    exact = 0.5 * p @ a @ p + ts * (d @ a @ p) + 0.5 * ts ** 2 * (d @ a @ d)  # a quadratic
    np.testing.assert_allclose(losses, exact, rtol=1e-12)
    unmasked = torch.ones(N, dtype=torch.float64)
    np.testing.assert_allclose(loss_along(op, unmasked, ts),
                               loss_along(op, unmasked * keep, ts), rtol=1e-14)
    assert random_direction(op, seed=0).tolist() != random_direction(op, seed=1).tolist()


def test_loss_along_a_model_starts_at_its_loss() -> None:
    model, data = _bn_model()
    model.eval()
    op = HessianOperator.from_model(model, data, "classification", batch_size=5)
    with torch.no_grad():
        exact = float(nn.functional.cross_entropy(model(data.x), data.y))
    losses = loss_along(op, gradient_direction(op), [0.0, -0.01, 0.01])
    assert float(losses[0]) == pytest.approx(exact, rel=1e-12)
    assert float(losses[1]) < exact < float(losses[2])  # ascent direction


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    model, data = _mlp()
    cpu = HessianOperator.from_model(model, data, "classification", batch_size=3)
    gpu = HessianOperator.from_model(model.cuda(), data, "classification", batch_size=3)
    assert gpu.device.type == "cuda"
    a = hutchinson_trace(cpu, max_probes=5, tol=None, seed=0).samples
    b = hutchinson_trace(gpu, max_probes=5, tol=None, seed=0).samples
    np.testing.assert_allclose(a, b, rtol=1e-10)


# --- bad input ---------------------------------------------------------------------------------

def _one_line_value_error(fn, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_bad_input_gives_one_line_value_errors(quad: dict) -> None:
    op = _op(quad, masked=True)
    model, data = _mlp()
    other = Mask.ones_like(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)))
    foreign = Mask({"conv.weight": torch.ones(3, 3, dtype=torch.bool)})
    cases = [
        (lambda: top_eigenvalues(op, k=0, seed=0), "k must be >= 1"),
        (lambda: top_eigenvalues(op, k=op.dim + 1, seed=0), "k must be <="),
        (lambda: lanczos(op, 0, seed=0), "steps must be >= 1"),
        (lambda: slq_density(op, steps=0, seed=0), "steps must be >= 1"),
        (lambda: slq_density(op, runs=0, seed=0), "runs must be >= 1"),
        (lambda: hutchinson_trace(op, max_probes=0, seed=0), "max_probes must be >= 1"),
        (lambda: hutchinson_trace(op, tol=-1.0, seed=0), "tol must lie in"),
        (lambda: hutchinson_trace(op, seed=-1), "seed must be >= 0"),
        (lambda: per_layer_trace(op, names=["c"], seed=0), "no parameter named 'c'"),
        (lambda: HessianOperator.from_model(model, data, "classification", other),
         "has shape .*a mask for another model"),
        (lambda: HessianOperator.from_model(model, data, "classification", foreign),
         "not a parameter here"),
        (lambda: HessianOperator.from_model(model, data, "ranking"), "task must be one of"),
        (lambda: HessianOperator.from_model(model, data, "classification", batch_size=0),
         "batch_size must be >= 1"),
        (lambda: HessianOperator(quad["loss"], quad["params"], hvp="fast"), "hvp must be one"),
        (lambda: HessianOperator(quad["loss"], {}), "params is empty"),
        (lambda: op.matvec(torch.ones(N + 1, dtype=torch.float64)), "length 50"),
        (lambda: loss_along(op, torch.ones(3), [0.0]), "length 50"),
        (lambda: gradient_direction(HessianOperator(lambda p: (p["a"] ** 2).sum(),
                                                    {"a": torch.zeros(3)})), "gradient is zero"),
        (lambda: smoothed_density(torch.ones(2), torch.ones(3)), "one length"),
        (lambda: smoothed_density(torch.ones(2), torch.ones(2), sigma2=0.0), "sigma2"),
        (lambda: smoothed_density(torch.ones(2), torch.ones(2), num_bins=1), "num_bins"),
    ]
    for fn, match in cases:
        _one_line_value_error(fn, match)

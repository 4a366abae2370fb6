"""Layer types of ``deep_lottery.layers`` and the initializations of ``deep_lottery.models``.

* score layers (Edge-Popup): the straight-through score gradient is spec sec. 4's
  ``dL/dS = (dL/dW_eff * W) * sign(S)``, also for weights outside the mask;
* ``top_k_mask`` keeps exactly ``kept_count(density, numel)`` entries, ties going to the lower
  flat index (= a stable descending sort);
* at density 1 a score model computes its dense model exactly;
* masked layers give the outputs and gradients of a dense model under ``Mask.apply`` +
  ``mask_gradients``;
* the initializations draw what their names say.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F  # noqa: N812

from deep_lottery.edge_popup import score_layers
from deep_lottery.layers import (
    MaskedConv2d,
    MaskedLinear,
    ScoreConv2d,
    ScoreLinear,
    kept_count,
    top_k_mask,
)
from deep_lottery.masks import Mask
from deep_lottery.models import build_model, prunable_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stable_sort_reference(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest entries by a stable descending sort (ties: lower flat index first)."""
    order = torch.sort(-values.flatten(), stable=True).indices
    keep = torch.zeros(values.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep.view_as(values)


# --- straight-through score gradients (spec sec. 4) ------------------------------------------

def test_score_linear_gradient_is_the_spec_formula() -> None:
    torch.manual_seed(0)
    layer = ScoreLinear(7, 5, bias=True, density=0.4)
    with torch.no_grad():
        layer.bias.normal_()
    x, r = torch.randn(6, 7), torch.randn(6, 5)
    (layer(x) * r).sum().backward()  # L = sum(out * r)

    W, S = layer.weight.detach(), layer.scores.detach()  # noqa: N806
    m = top_k_mask(S.abs(), kept_count(0.4, 35))
    assert int(m.sum()) == 14 and bool((S < 0).any()) and bool((S > 0).any())
    # dL/dW_eff by autograd on a plain linear layer with weight W * m ...
    w_eff = (W * m).requires_grad_(True)
    (F.linear(x, w_eff, layer.bias.detach()) * r).sum().backward()
    # ... and analytically: out = x W_eff^T + b, so dL/dW_eff = r^T x
    assert torch.allclose(w_eff.grad, r.T @ x, rtol=1e-5, atol=1e-6)
    expected = (w_eff.grad * W) * torch.sign(S)
    assert torch.allclose(layer.scores.grad, expected, rtol=1e-6, atol=0)
    # edges outside the mask get gradients too (they can "pop up")
    assert bool((layer.scores.grad[m == 0] != 0).all())
    # frozen weight and bias receive none
    assert layer.weight.grad is None and layer.bias.grad is None


def test_score_conv_gradient_is_the_spec_formula() -> None:
    torch.manual_seed(1)
    layer = ScoreConv2d(2, 3, 3, stride=1, padding=1, bias=False, density=0.3)
    x, r = torch.randn(4, 2, 5, 5), torch.randn(4, 3, 5, 5)
    (layer(x) * r).sum().backward()

    W, S = layer.weight.detach(), layer.scores.detach()  # noqa: N806
    m = top_k_mask(S.abs(), kept_count(0.3, W.numel()))
    assert int(m.sum()) == round(0.3 * 54) == 16
    w_eff = (W * m).requires_grad_(True)
    (F.conv2d(x, w_eff, None, padding=1) * r).sum().backward()
    expected = (w_eff.grad * W) * torch.sign(S)
    assert torch.allclose(layer.scores.grad, expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(layer.scores.grad, w_eff.grad * W)  # the sign matters
    assert bool((layer.scores.grad[m == 0] != 0).all())


def test_score_forward_uses_the_top_k_of_abs_scores_in_both_modes() -> None:
    torch.manual_seed(2)
    layer = ScoreLinear(6, 4, bias=False, density=0.25)
    x = torch.randn(3, 6)
    m = top_k_mask(layer.scores.detach().abs(), 6)
    expected = F.linear(x, layer.weight.detach() * m)
    assert torch.equal(layer(x), expected)  # straight-through path
    with torch.no_grad():
        assert torch.equal(layer(x), expected)  # selection without autograd
    # the mask follows the scores as they change (no stale cache)
    with torch.no_grad():
        layer.scores.neg_()  # same magnitudes: same mask
        assert torch.equal(layer(x), expected)
        layer.scores.copy_(torch.arange(24.0).view(4, 6))  # top 6 = the last row
    assert torch.equal(layer.subnet_mask()[3], torch.ones(6))
    assert int(layer.subnet_mask().sum()) == 6


# --- kept counts and the tie rule ------------------------------------------------------------

def test_kept_count_examples() -> None:
    assert kept_count(0.5, 3) == 2  # 1.5 rounds up
    assert kept_count(0.5, 5) == 3
    assert kept_count(0.25, 10) == 3  # 2.5 rounds up
    assert kept_count(0.2, 12) == 2  # 2.4
    assert kept_count(1e-9, 1000) == 1  # at least one weight
    assert kept_count(1.0, 17) == 17


@settings(max_examples=300, deadline=None)
@given(j=st.integers(1, 1024), n=st.integers(1, 5000))
def test_kept_count_is_round_half_up_on_exact_densities(j: int, n: int) -> None:
    """Dyadic densities j/1024 make ``density * n`` exact in floating point, so the formula
    ``max(1, floor(d n + 1/2))`` can be checked in exact rational arithmetic."""
    exact = max(1, math.floor(Fraction(j, 1024) * n + Fraction(1, 2)))
    assert kept_count(j / 1024, n) == exact


@settings(max_examples=200, deadline=None)
@given(density=st.floats(1e-6, 1.0), n=st.integers(1, 100_000))
def test_kept_count_is_within_half_of_density_times_numel(density: float, n: int) -> None:
    k = kept_count(density, n)
    assert 1 <= k <= n
    assert k == 1 or abs(k - density * n) <= 0.5 + 1e-9
    assert kept_count(min(1.0, density * 1.01), n) >= k  # monotone in the density


shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).filter(
    lambda s: math.prod(s) <= 2000)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, density=st.floats(1e-3, 1.0), seed=st.integers(0, 2**31 - 1),
       levels=st.sampled_from([2, 3, 5, 1000]))
def test_top_k_mask_keeps_kept_count_and_matches_a_stable_sort(
        shape: list[int], density: float, seed: int, levels: int) -> None:
    """Exactly ``kept_count`` ones, and the same ones as a stable descending sort, also with
    many ties (values drawn from only ``levels`` distinct numbers)."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, levels, shape, generator=g).float() - levels / 2
    k = kept_count(density, values.numel())
    mask = top_k_mask(values, k)
    assert mask.dtype == values.dtype and mask.shape == values.shape
    assert int(mask.sum()) == k
    assert torch.equal(mask.bool(), stable_sort_reference(values, k))


def test_ties_go_to_the_lower_flat_indices() -> None:
    equal = torch.full((4, 5), 0.3)
    for k in (1, 7, 19, 20):
        mask = top_k_mask(equal, k).flatten()
        assert torch.equal(mask, (torch.arange(20) < k).float())
    # a block of equal values straddling the threshold: 3 values above it, a block of 6 equal
    # values at flat indices 4..9 of which 2 are kept, the rest below
    values = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.7, 0.0])
    mask = top_k_mask(values.view(3, 4), 5).flatten()
    assert mask.nonzero().flatten().tolist() == [1, 3, 4, 5, 10]
    assert torch.equal(mask.bool(), stable_sort_reference(values, 5))
    # the same in a conv-shaped tensor with the tied block spread over two filters
    conv = torch.zeros(2, 2, 3, 3)
    conv.view(-1)[7:13] = 1.0  # six tied ones at flat indices 7..12
    conv.view(-1)[30] = 2.0
    mask = top_k_mask(conv, 4).flatten()
    assert mask.nonzero().flatten().tolist() == [7, 8, 9, 30]
    # k = 0 and k = numel
    assert int(top_k_mask(values, 0).sum()) == 0 and int(top_k_mask(values, 12).sum()) == 12


@pytest.mark.parametrize("density", [0.013, 0.3, 0.5, 0.77])
def test_every_score_layer_keeps_kept_count(density: float) -> None:
    model = build_model("conv2", seed=0, layers="score", density=density, width=0.0625,
                        input_shape=(1, 12, 12))
    for layer in score_layers(model).values():
        n = layer.weight.numel()
        assert int(layer.subnet_mask().sum()) == kept_count(density, n)


# --- density 1 = the dense network -----------------------------------------------------------

@pytest.mark.parametrize("name,options,shape", [
    ("mlp", {"hidden": (20, 10)}, (1, 6, 6)),
    ("conv2", {"width": 0.0625}, (1, 8, 8)),
])
def test_density_one_is_the_dense_forward(name: str, options: dict, shape: tuple) -> None:
    dense = build_model(name, seed=3, init="kaiming_normal", input_shape=shape, **options)
    score = build_model(name, seed=3, init="kaiming_normal", input_shape=shape, layers="score",
                        density=1.0, **options)
    dense_w = dict(dense.named_parameters())
    score_w = dict(score.named_parameters())
    names = prunable_names(dense)
    assert names == prunable_names(score)
    # Same seed, same init: every weight agrees (the scores come from their own stream).
    for n in names:
        assert torch.equal(dense_w[n], score_w[n])
    x = torch.randn(5, *shape)
    assert torch.equal(score(x), dense(x))  # straight-through path (scores need gradients)
    with torch.no_grad():
        assert torch.equal(score(x), dense(x))


# --- masked layers = dense + Mask ------------------------------------------------------------

@pytest.mark.parametrize("name,options,shape", [
    ("mlp", {"hidden": (12, 8)}, (1, 5, 5)),
    ("conv2", {"width": 0.0625}, (1, 8, 8)),
])
def test_masked_layers_equal_dense_with_mask_enforcement(name: str, options: dict,
                                                         shape: tuple) -> None:
    dense = build_model(name, seed=4, init="kaiming", input_shape=shape, **options)
    masked = build_model(name, seed=4, init="kaiming", input_shape=shape, layers="masked",
                         **options)
    assert any(isinstance(m, MaskedLinear) for m in masked.modules())
    if name == "conv2":
        assert any(isinstance(m, MaskedConv2d) for m in masked.modules())
    for n, p in dense.named_parameters():  # no extra draws: the same weights
        assert torch.equal(p, dict(masked.named_parameters())[n])
    g = torch.Generator().manual_seed(5)
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.4
                 for n, p in dense.named_parameters() if n in prunable_names(dense)})
    for n, keep in mask.items():
        masked.get_submodule(n.rsplit(".", 1)[0]).set_mask(keep)
    mask.apply(dense)

    x, y = torch.randn(6, *shape, generator=g), torch.randint(0, 10, (6,), generator=g)
    out_dense, out_masked = dense(x), masked(x)
    assert torch.equal(out_dense, out_masked)
    F.cross_entropy(out_dense, y).backward()
    F.cross_entropy(out_masked, y).backward()
    mask.mask_gradients(dense)
    masked_params = dict(masked.named_parameters())
    for n, p in dense.named_parameters():
        assert torch.allclose(masked_params[n].grad, p.grad, rtol=1e-6, atol=1e-9), n
        if n in mask.names():  # the masked layer zeroes pruned gradients by itself
            assert int(torch.count_nonzero(masked_params[n].grad[~mask[n]])) == 0
            assert int(torch.count_nonzero(masked_params[n].grad[mask[n]])) > 0


def test_masked_layer_refuses_a_mask_of_the_wrong_shape() -> None:
    layer = MaskedLinear(3, 2)
    with pytest.raises(ValueError, match="shape"):
        layer.set_mask(torch.ones(3, 2))


# --- initializations ---------------------------------------------------------------------------

def _layers(init: str, layers: str = "score", density: float = 0.25) -> dict[str, torch.Tensor]:
    options = {"density": density} if layers == "score" else {}
    model = build_model("mlp", seed=7, init=init, hidden=(300,), bias=False, layers=layers,
                        **options)
    return {n: p.detach() for n, p in model.named_parameters()}


FANS = {"hidden.0.weight": 784, "fc.weight": 300}


def test_signed_constant_takes_two_values_half_each() -> None:
    w = _layers("signed_constant")
    for n, fan_in in FANS.items():
        c = math.sqrt(2 / fan_in)
        values = torch.unique(w[n])
        assert values.tolist() == pytest.approx([-c, c], rel=1e-6)
        assert len(values) == 2
        share = float((w[n] > 0).double().mean())
        assert abs(share - 0.5) < 4 * 0.5 / math.sqrt(w[n].numel())  # 4 sigma


def test_scaled_variants_divide_by_sqrt_density() -> None:
    density = 0.25
    plain, scaled = _layers("signed_constant"), _layers("scaled_signed_constant", density=density)
    for n, fan_in in FANS.items():
        assert torch.unique(scaled[n].abs()).tolist() == pytest.approx(
            [math.sqrt(2 / fan_in) / math.sqrt(density)], rel=1e-6)
        assert torch.equal(torch.sign(plain[n]), torch.sign(scaled[n]))  # same draws
    normal = _layers("scaled_kaiming_normal", density=density)
    for n, fan_in in FANS.items():
        assert float(normal[n].std()) == pytest.approx(
            math.sqrt(2 / (density * fan_in)), rel=0.03)
    # a layer without a density (dense, masked) is not scaled
    dense = _layers("scaled_signed_constant", layers="dense")
    for n, fan_in in FANS.items():
        assert torch.unique(dense[n].abs()).tolist() == pytest.approx([math.sqrt(2 / fan_in)],
                                                                     rel=1e-6)


def test_kaiming_normal_std_and_score_init() -> None:
    w = _layers("kaiming_normal")
    for n, fan_in in FANS.items():
        assert float(w[n].std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
        assert abs(float(w[n].mean())) < 0.05 * math.sqrt(2 / fan_in)
        bound = 1 / math.sqrt(fan_in)
        s = w[n.replace("weight", "scores")]
        assert float(s.abs().max()) <= bound
        assert float(s.max()) > 0.99 * bound and float(s.min()) < -0.99 * bound
        assert float(s.std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)  # uniform
    # conv: fan_in = in_channels * kernel area; also the constructor's own draw
    conv = ScoreConv2d(8, 16, 3)
    bound = 1 / math.sqrt(8 * 9)
    assert float(conv.scores.detach().abs().max()) <= bound
    assert float(conv.scores.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert not conv.weight.requires_grad and conv.scores.requires_grad

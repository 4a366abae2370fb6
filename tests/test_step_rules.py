"""SAM, adaptive SAM and NVRM restricted to the ticket, and the kept-weight penalties (spec sec. 2;
Sakamoto & Sato 2022, Eq. 1), against closed forms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from deep_lottery.data import Splits, TensorData
from deep_lottery.masks import Mask
from deep_lottery.models import build_model
from deep_lottery.regularizers import REGULARIZERS
from deep_lottery.step_rules import STEP_RULES, frozen_batch_norm_statistics
from deep_lottery.training import TrainConfig, train

H = torch.tensor([10.0, 0.1], dtype=torch.float64)
CPU = torch.device("cpu")


class Quadratic(nn.Module):
    """``L(w) = 1/2 w^T diag(H) w`` with ``w`` the weight of a bias-free Linear(2, 1)."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1, bias=False).double()
        with torch.no_grad():
            self.layer.weight.copy_(torch.tensor([w], dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        w = self.layer.weight[0]
        return 0.5 * (H * w * w).sum()


def _closure(model: Quadratic, mask: Mask | None = None):
    enforcer = None if mask is None else mask.enforcer(model)

    def forward_backward() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss = model.loss()
        loss.backward()
        if enforcer is not None:
            enforcer.before_step()
        return loss

    return forward_backward


def _rule(name: str, model: nn.Module, mask: Mask | None = None, **cfg):
    config = TrainConfig(iterations=1, step_rule=name, **cfg)
    return STEP_RULES[name](model, mask, config, list(model.parameters()), 4, 0)


def test_sam_gradient_equals_closed_form_and_weights_are_restored():
    w0 = torch.tensor([0.3, -0.7], dtype=torch.float64)
    model = Quadratic(w0.tolist())
    rho = 0.05
    rule = _rule("sam", model, rho=rho)
    rule.gradients(_closure(model), measure=True)
    hw = H * w0
    expected = hw + rho * H * H * w0 / torch.linalg.vector_norm(hw)
    torch.testing.assert_close(model.layer.weight.grad[0], expected, rtol=0, atol=1e-12)
    assert torch.equal(model.layer.weight.detach()[0], w0)  # restored bit for bit
    stats = rule.stats()
    assert stats["sam_eps_norm"] == pytest.approx(rho, rel=1e-9)
    assert stats["sam_grad_norm"] == pytest.approx(float(torch.linalg.vector_norm(hw)), rel=1e-9)


def test_adaptive_sam_gradient_equals_closed_form():
    w0 = torch.tensor([0.3, -0.7], dtype=torch.float64)
    model = Quadratic(w0.tolist())
    rho = 0.5
    _rule("asam", model, rho=rho).gradients(_closure(model), measure=False)
    g = H * w0
    eps = rho * w0 ** 2 * g / torch.linalg.vector_norm(w0.abs() * g)
    torch.testing.assert_close(model.layer.weight.grad[0], H * (w0 + eps), rtol=1e-10, atol=0)


def test_sam_never_perturbs_a_pruned_weight():
    model = Quadratic([0.3, 0.0])
    mask = Mask({"layer.weight": torch.tensor([[True, False]])})
    rule = _rule("sam", model, mask)
    rule.gradients(_closure(model, mask), measure=True)
    assert model.layer.weight.grad[0, 1].item() == 0.0
    assert model.layer.weight[0, 1].item() == 0.0
    assert rule.stats()["sam_eps_share_on_pruned_max"] == 0.0
    # the closed form on the kept coordinate alone: H1 w1 + rho H1^2 w1 / |H1 w1|
    w1 = 0.3
    assert model.layer.weight.grad[0, 0].item() == pytest.approx(10 * w1 + 0.05 * 10, rel=1e-12)


def test_sam_second_pass_leaves_batch_norm_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    reference = [b.clone() for b in model[1].buffers()]

    def forward_backward() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    forward_backward()  # one plain pass: the statistics SAM's first pass must leave
    after_one = [b.clone() for b in model[1].buffers()]
    assert not torch.equal(after_one[0], reference[0])
    for b, r in zip(model[1].buffers(), reference):
        b.copy_(r)
    _rule("sam", model).gradients(forward_backward, measure=False)
    for b, expected in zip(model[1].buffers(), after_one):
        assert torch.equal(b, expected)
    with frozen_batch_norm_statistics(model):
        forward_backward()
    for b, expected in zip(model[1].buffers(), after_one):
        assert torch.equal(b, expected)


def _step_nvrm(model: nn.Module, rule, steps: int, lr: float = 0.0) -> list[torch.Tensor]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    noisy = []
    for it in range(steps):
        def forward_backward() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            loss = model(torch.ones(1, model.in_features)).sum()
            loss.backward()
            return loss
        rule.gradients(forward_backward, measure=True)
        rule.before_optimizer()
        optimizer.step()
        rule.after_optimizer(it)
        noisy.append(model.weight.detach().clone())
    return noisy


@pytest.mark.parametrize("noise", ["gaussian", "uniform", "laplace"])
def test_nvrm_noise_has_the_set_scale_and_vanishes_at_epoch_boundaries(noise):
    b, per_epoch = 0.05, 4
    model = nn.Linear(400, 100, bias=False)
    keep = torch.rand(100, 400, generator=torch.Generator().manual_seed(0)) < 0.3
    mask = Mask({"weight": keep})
    mask.apply(model)
    theta = model.weight.detach().clone()
    config = TrainConfig(iterations=1, step_rule="nvrm", variability=b, noise=noise)
    rule = STEP_RULES["nvrm"](model, mask, config, list(model.parameters()), per_epoch, 7)
    noisy = _step_nvrm(model, rule, 2 * per_epoch)
    std = {"gaussian": b, "uniform": b / np.sqrt(3), "laplace": b * np.sqrt(2)}[noise]
    for it, p in enumerate(noisy):
        diff = p - theta
        assert torch.all(diff[~keep] == 0)  # pruned entries stay exactly zero
        if (it + 1) % per_epoch == 0:
            assert torch.equal(p, theta)  # clean at the epoch boundary, bit for bit
        else:
            assert float(diff[keep].std()) == pytest.approx(std, rel=0.05)
            if noise == "uniform":
                assert float(diff.abs().max()) <= b
    with rule.clean_weights():
        assert torch.equal(model.weight, theta)


def test_nvrm_takes_the_gradient_at_the_noisy_point():
    """One step past the first: theta_2 = theta_1 - lr grad(theta_1 + eps_1) for a loss whose
    gradient depends on the weights (sum of squares)."""
    model = nn.Linear(3, 2, bias=False).double()
    theta0 = model.weight.detach().clone()
    config = TrainConfig(iterations=1, step_rule="nvrm", variability=0.1)
    rule = STEP_RULES["nvrm"](model, None, config, list(model.parameters()), 10, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for it in range(2):
        def forward_backward() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            loss = (model.weight ** 2).sum()
            loss.backward()
            return loss
        rule.gradients(forward_backward, measure=False)
        if it == 1:
            noisy_point = model.weight.detach().clone()
        rule.before_optimizer()
        optimizer.step()
        rule.after_optimizer(it)
    theta1 = theta0 - 0.1 * 2 * theta0
    expected = theta1 - 0.1 * 2 * noisy_point
    with rule.clean_weights():
        torch.testing.assert_close(model.weight.detach(), expected, rtol=0, atol=1e-12)


def _splits(n: int = 240, d: int = 12, seed: int = 0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, 3, generator=g)

    def part(m: int) -> TensorData:
        x = torch.randn(m, 1, 3, 4, generator=g)
        return TensorData(x, (x.reshape(m, -1) @ w).argmax(1))

    return Splits(part(n), part(80), part(80), 3, {})


def _mask(model: nn.Module, density: float = 0.4, seed: int = 1) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(p.shape, generator=g) < density
                 for n, p in model.named_parameters() if n in Mask.ones_like(model)})


@pytest.mark.parametrize("rule", ["sam", "asam", "nvrm"])
def test_training_with_a_step_rule_keeps_pruned_weights_zero(rule):
    splits = _splits()
    model = build_model("mlp", seed=0, input_shape=(1, 3, 4), num_classes=3, hidden=(16,))
    mask = _mask(model)
    cfg = TrainConfig(iterations=40, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9,
                      weight_decay=1e-3, eval_every=10, step_rule=rule, rho=0.1,
                      variability=0.02)
    result = train(model, mask, splits, cfg, task="classification", device=CPU)
    for name, keep in mask.items():
        assert torch.all(result.final_state[name][~keep] == 0)
    plain = train(build_model("mlp", seed=0, input_shape=(1, 3, 4), num_classes=3, hidden=(16,)),
                  mask, splits, dataclasses.replace(cfg, step_rule="plain"),
                  task="classification", device=CPU)
    assert any(not torch.equal(result.final_state[n], plain.final_state[n]) for n in mask.names())
    assert result.summary()[f"{'sam' if 'sam' in rule else 'nvrm'}_" + (
        "eps_norm" if "sam" in rule else "noise_to_weight_norm")] > 0


@pytest.mark.parametrize("rule", ["sam", "nvrm"])
def test_a_killed_run_with_a_step_rule_resumes_to_the_same_weights(rule, tmp_path):
    splits = _splits()
    cfg = TrainConfig(iterations=30, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9,
                      eval_every=7, step_rule=rule, variability=0.02)

    def model() -> nn.Module:
        return build_model("mlp", seed=0, input_shape=(1, 3, 4), num_classes=3, hidden=(16,))

    mask = _mask(model())
    whole = train(model(), mask, splits, cfg, task="classification", device=CPU)
    path = tmp_path / "ck.pth"
    first = dataclasses.replace(cfg, iterations=30)
    killed = model()

    class Kill(Exception):
        pass

    class KillAt:
        count = 0

        def before_step(self) -> None:
            return None

        def after_step(self) -> None:
            KillAt.count += 1
            if KillAt.count == 17:
                raise Kill

    with pytest.raises(Kill):
        train(killed, mask, splits, first, task="classification", device=CPU, checkpoint=path,
              checkpoint_every=5, hooks=[KillAt()])
    assert path.exists()
    resumed = train(model(), mask, splits, cfg, task="classification", device=CPU,
                    checkpoint=path, checkpoint_every=5)
    for name, value in whole.final_state.items():
        assert torch.equal(value, resumed.final_state[name]), name
    assert whole.early_stop_iteration == resumed.early_stop_iteration


@pytest.mark.parametrize("name", ["l2_norm", "l2_init"])
def test_penalty_gradient_equals_autograd_of_eq_1(name):
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)).double()
    mask = _mask(model, 0.5, 2)
    mask.apply(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    hook = REGULARIZERS[name](model, mask, 0.3)
    with torch.no_grad():  # move away from the start so that l2_init is not zero
        for p in model.parameters():
            p.add_(0.1)
        mask.apply(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    hook.before_step()
    penalty = 0.0
    params = dict(model.named_parameters())
    for n, keep in mask.items():
        ref = start[n] if name == "l2_init" else torch.zeros_like(start[n])
        penalty = penalty + 0.3 * ((params[n] - ref) * keep).pow(2).sum()
    expected = torch.autograd.grad(penalty, [params[n] for n in mask.names()])
    for n, g in zip(mask.names(), expected):
        torch.testing.assert_close(params[n].grad, g, rtol=0, atol=1e-12)
    assert hook.penalty() == pytest.approx(float(penalty.detach()), rel=1e-12)
    for n, p in params.items():  # biases are not penalized
        if n not in mask:
            assert torch.all(p.grad == 0)


def test_l2_init_keeps_the_ticket_near_its_start_and_l2_norm_shrinks_it():
    splits = _splits()
    cfg = TrainConfig(iterations=60, batch_size=32, optimizer="sgd", lr=0.05, eval_every=20)

    def run(regularizer: str, coefficient: float):
        model = build_model("mlp", seed=0, input_shape=(1, 3, 4), num_classes=3, hidden=(16,))
        mask = _mask(model)
        return train(model, mask, splits, dataclasses.replace(
            cfg, regularizer=regularizer, regularization=coefficient),
            task="classification", device=CPU).extra

    free, init, norm = run("none", 0.0), run("l2_init", 1.0), run("l2_norm", 1.0)
    assert init["distance_from_start"] < 0.5 * free["distance_from_start"]
    assert norm["weight_norm"] < 0.8 * free["weight_norm"]


def test_sam_leaves_the_sharp_well_of_a_double_well():
    """L(w) = min(50 (w - 1)^2, 0.5 (w + 1)^2) + 0.5 (spec sec. 2, [I]), lr 0.01, rho 0.3: from
    starts spread over [-0.2, 1.1], gradient descent ends in the sharp well (the branch
    50 (w - 1)^2, w in (9/11, 11/9)) from every start inside it; SAM ends on the flat branch from
    every start. (From starts above 1 - 2 rho, SAM does not reach the flat minimum -1: its
    perturbed gradient vanishes where w + rho lands on the sharp well's minimum, so it settles
    near w = 1 - rho = 0.7, on the flat branch's slope.)"""

    class DoubleWell(nn.Module):
        def __init__(self, w: float) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

        def loss(self) -> torch.Tensor:
            return torch.minimum(50 * (self.w - 1) ** 2, 0.5 * (self.w + 1) ** 2) + 0.5

    def final(w0: float, rule: str) -> float:
        model = DoubleWell(w0)
        step = _rule(rule, model, rho=0.3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

        def forward_backward() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            loss = model.loss()
            loss.backward()
            return loss

        for _ in range(300):
            step.gradients(forward_backward, measure=False)
            optimizer.step()
        return float(model.w.detach())

    def on_flat_branch(w: float) -> bool:
        return 0.5 * (w + 1) ** 2 < 50 * (w - 1) ** 2

    starts = np.linspace(-0.2, 1.1, 14)
    in_sharp_well = sum(not on_flat_branch(w) for w in starts)
    assert in_sharp_well >= 3
    gd = [final(w, "plain") for w in starts]
    sam = [final(w, "sam") for w in starts]
    assert sum(on_flat_branch(w) for w in gd) == len(starts) - in_sharp_well
    assert all(on_flat_branch(w) for w in sam)
    assert all(min(abs(w + 1), abs(w - 0.7)) < 0.05 for w in sam)
    assert any(abs(w - 0.7) < 0.05 for w in sam)


def test_bad_step_rule_settings_are_one_line_errors():
    for kwargs, text in (({"step_rule": "sharp"}, "unknown step rule"),
                         ({"rho": -1.0}, "rho"), ({"noise": "pink"}, "noise must be one of"),
                         ({"regularizer": "l3"}, "unknown regularizer"),
                         ({"regularization": -1e-3}, "regularization")):
        with pytest.raises(ValueError, match=text) as info:
            TrainConfig(iterations=1, **kwargs)
        assert "\n" not in str(info.value)

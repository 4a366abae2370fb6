"""Edge-Popup score training, PGD in an l_inf ball and export (``deep_lottery.edge_popup``).

* ``train_scores`` moves the scores only; weight decay acts on the scores;
* the PGD iterate never leaves the eps ball, sits on its boundary when the steps are large,
  never touches it when eps is large, and stays at W0 when eps = 0; ``clip_report`` counts the
  weights at the bound;
* an exported subnetwork computes the score model's outputs exactly (MLP, Conv-2, ResNet-20 with
  BatchNorm), keeps ``kept_count`` weights per layer, and works with the IMP tools.
"""

from __future__ import annotations

import math

import pytest
import torch

from deep_lottery.data import Splits, TensorData
from deep_lottery.edge_popup import (
    LInfProjection,
    clip_report,
    export_subnetwork,
    load_weights,
    pgd_train,
    score_layers,
    set_density,
    subnetwork_mask,
    train_scores,
)
from deep_lottery.layers import kept_count
from deep_lottery.masks import Mask
from deep_lottery.models import build_model, prunable_names
from deep_lottery.pruning import PruneConfig, keep_scores, prune
from deep_lottery.training import TrainConfig, evaluate, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
SHAPE = (1, 4, 4)


def make_splits(seed: int = 0, zeros: bool = False) -> Splits:
    """Three classes of 4x4 images labelled by a random linear teacher (or all-zero images)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(400, *SHAPE, generator=g)
    y = (x.flatten(1) @ torch.randn(16, 3, generator=g)).argmax(1)
    if zeros:
        x = torch.zeros_like(x)
    return Splits(TensorData(x[:300], y[:300]), TensorData(x[300:350], y[300:350]),
                  TensorData(x[350:], y[350:]), 3)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return make_splits()


def score_mlp(seed: int = 0, density: float = 0.5, bias: bool = True) -> torch.nn.Module:
    return build_model("mlp", seed=seed, init="signed_constant", layers="score", density=density,
                       hidden=(32,), bias=bias, input_shape=SHAPE, num_classes=3)


def dense_mlp(seed: int = 0) -> torch.nn.Module:
    return build_model("mlp", seed=seed, init="kaiming", hidden=(32,), input_shape=SHAPE,
                       num_classes=3)


def sgd(iterations: int, lr: float, **kwargs) -> TrainConfig:
    return TrainConfig(iterations=iterations, batch_size=50, optimizer="sgd", lr=lr,
                       eval_every=iterations, amp=False, **kwargs)


# --- train_scores ------------------------------------------------------------------------------

def test_train_scores_moves_only_the_scores(splits: Splits) -> None:
    model = score_mlp()
    with torch.no_grad():
        for layer in score_layers(model).values():
            layer.bias.normal_()  # non-zero biases, so that "unchanged" means something
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask_before = subnetwork_mask(model)
    loss_before, _ = evaluate(model, splits.train, "classification", CPU)
    cfg = sgd(40, 0.1, momentum=0.9, weight_decay=1e-4, schedule="cosine")
    result = train_scores(model, splits, cfg, task="classification", device=CPU)
    after = model.state_dict()
    assert set(before) == set(after)
    for key, value in before.items():
        if key.endswith("scores"):
            assert not torch.equal(value, after[key]), key
        else:  # frozen weights and biases
            assert torch.equal(value, after[key]), key
    assert subnetwork_mask(model) != mask_before  # edges popped in and out
    assert result.train_loss_end < loss_before  # and it learned something
    with pytest.raises(ValueError, match="no score layers"):
        train_scores(dense_mlp(), splits, cfg, task="classification", device=CPU)


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_weight_decay_acts_on_the_scores(weight_decay: float) -> None:
    """All-zero inputs and no biases: every score gradient is exactly 0, so SGD only decays,
    ``S_T = S_0 prod_t (1 - lr_t wd)`` with the cosine learning rates ``lr_t``."""
    model = score_mlp(bias=False)
    s0 = {n: layer.scores.detach().clone() for n, layer in score_layers(model).items()}
    cfg = sgd(8, 0.5, weight_decay=weight_decay, schedule="cosine")
    train_scores(model, make_splits(zeros=True), cfg, task="classification", device=CPU)
    factor = math.prod(1 - cfg.lr_at(t) * weight_decay for t in range(cfg.iterations))
    for n, layer in score_layers(model).items():
        if weight_decay == 0:
            assert torch.equal(layer.scores.detach(), s0[n])
        else:
            assert factor < 0.5
            assert torch.allclose(layer.scores.detach(), s0[n] * factor, rtol=1e-5, atol=0)


# --- PGD in the l_inf ball ---------------------------------------------------------------------

def float_slack(centers: dict[str, torch.Tensor], eps: float) -> float:
    """``W0 + d`` is rounded to float32: the iterate may sit half an ulp of |W0| + eps outside."""
    top = max(float(c.abs().max()) for c in centers.values())
    return torch.finfo(torch.float32).eps * (top + eps)


class BallCheck:
    """Step hook (after the projection) recording ``max |W - W0|`` after every step."""

    def __init__(self, projection: LInfProjection) -> None:
        self.projection = projection
        self.shifts: list[float] = []

    def before_step(self) -> None:
        return None

    @torch.no_grad()
    def after_step(self) -> None:
        self.shifts.append(max(float((p.double() - c.double()).abs().max())
                               for p, c in zip(self.projection.params, self.projection.centers)))


def test_pgd_iterate_never_leaves_the_ball(splits: Splits) -> None:
    eps, iterations = 1e-3, 12
    model = dense_mlp()
    names = prunable_names(model)
    projection = LInfProjection(model, names, eps)
    check = BallCheck(projection)
    train(model, None, splits, sgd(iterations, 5.0), task="classification", device=CPU,
          hooks=[projection, check])
    slack = float_slack(dict(zip(names, projection.centers)), eps)
    assert len(check.shifts) == iterations
    assert max(check.shifts) <= eps + slack
    assert min(check.shifts) >= eps - slack  # large steps: on the boundary from step 1


class ClipRecorder:
    """Step hook placed before the projection: which weights the projection is about to clip."""

    def __init__(self, projection: LInfProjection) -> None:
        self.projection = projection
        self.clipped: list[torch.Tensor] = []

    def before_step(self) -> None:
        return None

    @torch.no_grad()
    def after_step(self) -> None:
        eps = torch.tensor(self.projection.eps, dtype=torch.float32)
        self.clipped = [(p - c).abs() >= eps
                        for p, c in zip(self.projection.params, self.projection.centers)]


def test_pgd_clip_is_active_and_reported(splits: Splits) -> None:
    """Large steps, small eps: almost every weight ends on the boundary, and ``clip_report``
    counts exactly the weights clipped at the last step (float32 rounding of ``W0 + d`` put
    about half of them just inside the ball, which a relative tolerance alone missed)."""
    eps, cfg = 1e-3, sgd(12, 5.0)
    model = dense_mlp()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    names = prunable_names(model)
    projection = LInfProjection(model, names, eps)
    recorder = ClipRecorder(projection)
    train(model, None, splits, cfg, task="classification", device=CPU,
          hooks=[recorder, projection])
    final = model.state_dict()
    report = clip_report(w0, final, eps, names)
    slack = float_slack({n: w0[n] for n in names}, eps)
    clipped = dict(zip(names, recorder.clipped))
    for n in names:
        assert report["layers"][n]["max_shift"] == pytest.approx(eps, abs=slack)
        assert report["layers"][n]["share_at_bound"] == float(clipped[n].double().mean())
    share = sum(int(c.sum()) for c in clipped.values()) / sum(c.numel() for c in clipped.values())
    assert report["share_at_bound"] == share > 0.9
    assert report["max_shift"] == pytest.approx(eps, abs=slack)
    assert report["layers"][names[0]]["eps_over_std"] == pytest.approx(
        eps / float(w0[names[0]].double().std()))
    # the biases are not in the ball: they moved freely
    assert float((final["fc.bias"] - w0["fc.bias"]).abs().max()) > 10 * eps
    # pgd_train is this very loop
    again = dense_mlp()
    pgd_train(again, splits, cfg, eps, task="classification", device=CPU)
    for key, value in again.state_dict().items():
        assert torch.equal(value, final[key]), key


def test_pgd_with_a_large_ball_is_plain_sgd(splits: Splits) -> None:
    eps = 10.0
    projected, plain = dense_mlp(), dense_mlp()
    w0 = {k: v.clone() for k, v in projected.state_dict().items()}
    cfg = sgd(12, 0.05)
    pgd_train(projected, splits, cfg, eps, task="classification", device=CPU)
    train(plain, None, splits, cfg, task="classification", device=CPU)
    names = prunable_names(plain)
    for n in names:
        assert torch.allclose(projected.state_dict()[n], plain.state_dict()[n], atol=1e-6)
    assert clip_report(w0, projected.state_dict(), eps, names)["share_at_bound"] == 0


def test_pgd_with_eps_zero_keeps_w0(splits: Splits) -> None:
    model = dense_mlp()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    names = prunable_names(model)
    pgd_train(model, splits, sgd(5, 1.0), 0.0, task="classification", device=CPU)
    for n in names:
        assert torch.equal(model.state_dict()[n], w0[n])
    assert not torch.equal(model.state_dict()["fc.bias"], w0["fc.bias"])
    report = clip_report(w0, model.state_dict(), 0.0, names)
    assert report["max_shift"] == 0 and report["share_at_bound"] == 1
    # then Edge-Popup on W_T: the score model holds exactly these weights
    scored = load_weights(score_mlp(seed=9), model.state_dict())
    for n in names:
        assert torch.equal(scored.state_dict()[n], w0[n])
    with pytest.raises(ValueError, match="no parameters"):
        LInfProjection(model, ["nope.weight"], 0.1)


# --- export ------------------------------------------------------------------------------------

def check_export(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, Mask]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    exported, mask = export_subnetwork(model)
    for key, value in model.state_dict().items():  # the score model is not changed
        assert torch.equal(value, state[key])
    for mode in ("eval", "train"):
        getattr(model, mode)()
        getattr(exported, mode)()
        with torch.no_grad():
            assert torch.equal(exported(x), model(x)), mode
    model.train()
    assert torch.equal(exported(x), model(x))  # also the straight-through path
    assert not any(k.endswith("scores") for k in exported.state_dict())
    assert all(p.requires_grad for p in exported.parameters())
    assert set(mask.names()) == set(prunable_names(exported))
    params = dict(exported.named_parameters())
    for n, layer in score_layers(model).items():
        numel = layer.weight.numel()
        assert int(mask[n].sum()) == kept_count(layer.density, numel)
        assert mask.layer_density()[n] == pytest.approx(kept_count(layer.density, numel) / numel)
        assert torch.equal(params[n], layer.weight * mask[n])
    before = {k: v.clone() for k, v in exported.state_dict().items()}
    mask.apply(exported)  # already W * m: unchanged
    for key, value in exported.state_dict().items():
        assert torch.equal(value, before[key])
    return exported, mask


def test_export_mlp_after_training_works_with_imp_tools(splits: Splits) -> None:
    model = score_mlp(density=0.3)
    train_scores(model, splits, sgd(10, 0.1, momentum=0.9), task="classification", device=CPU)
    exported, mask = check_export(model, splits.test.x)
    # IMP tools take it as it is: one pruning level and masked training
    names = mask.names()
    params = dict(exported.named_parameters())
    scores = keep_scores("large_final", {n: params[n] for n in names}, None, names,
                         torch.Generator().manual_seed(0))
    pruned = prune(exported, mask, scores, PruneConfig(fraction=0.2), torch.Generator())
    assert pruned.is_subset_of(mask) and pruned.num_kept < mask.num_kept
    start = {n: params[n].detach().clone() for n in names}
    train(exported, mask, splits, sgd(5, 0.1), task="classification", device=CPU)
    for n in names:
        w = dict(exported.named_parameters())[n].detach()
        assert int(torch.count_nonzero(w[~mask[n]])) == 0
        assert not torch.equal(w[mask[n]], start[n][mask[n]])


def test_export_conv2_and_resnet20_with_batchnorm() -> None:
    conv = build_model("conv2", seed=1, init="signed_constant", layers="score", density=0.2,
                       width=0.125, input_shape=(1, 28, 28))
    check_export(conv, torch.randn(3, 1, 28, 28))

    resnet = build_model("resnet20", seed=2, init="kaiming_normal", layers="score", density=0.4,
                         width=4, input_shape=(1, 16, 16))
    set_density(resnet, 0.35)
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        resnet.train()
        for _ in range(2):
            resnet(torch.randn(8, 1, 16, 16))
    assert float(resnet.bn.running_var.sub(1).abs().max()) > 0
    exported, mask = check_export(resnet, torch.randn(4, 1, 16, 16))
    assert mask.density == pytest.approx(0.35, abs=0.01)
    assert torch.equal(exported.bn.running_mean, resnet.bn.running_mean)

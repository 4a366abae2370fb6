"""Mask invariants and pruning (spec sec. 0 and 4): pruned weights stay exactly zero through
optimizer steps, masks only shrink, densities follow the schedule, counts match brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from deep_lottery.device import generator
from deep_lottery.masks import Mask
from deep_lottery.models import build_model, prunable_names
from deep_lottery.pruning import (
    PruneConfig,
    drop_lowest,
    keep_scores,
    layer_fractions,
    prune,
    shuffle_mask,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _weights(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in mask.names()}


def _random_mask(model: nn.Module, density: float, seed: int) -> Mask:
    g = generator(seed)
    return Mask({n: torch.rand(p.shape, generator=g) < density
                 for n, p in model.named_parameters() if n in prunable_names(model)})


@pytest.mark.parametrize("opt", ["sgd_momentum_wd", "adam_wd", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_steps(opt: str) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", seed=1)
    mask = _random_mask(model, 0.3, seed=2)
    enforcer = mask.enforcer(model)
    mask.apply(model)
    if opt == "sgd_momentum_wd":
        optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    elif opt == "adam_wd":
        optim = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-2)
    else:
        optim = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-1)
    g = generator(3)
    before = {n: w.clone() for n, w in _weights(model, mask).items()}
    for _ in range(5):
        x = torch.randn(8, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        optim.zero_grad()
        loss.backward()
        enforcer.before_step()
        for n, p in model.named_parameters():  # gradients are masked before the step reads them
            if n in mask.names():
                assert torch.count_nonzero(p.grad[~mask[n]]) == 0
        optim.step()
        enforcer.after_step()
    for n, w in _weights(model, mask).items():
        assert torch.count_nonzero(w[~mask[n]]) == 0
        assert not torch.equal(w[mask[n]], before[n][mask[n]])  # kept weights did train


def test_without_enforcement_momentum_would_move_pruned_weights() -> None:
    """The invariant above is not vacuous: SGD with weight decay and momentum moves zeroed
    weights whose gradient is not masked."""
    model = build_model("lenet_300_100", seed=0)
    mask = _random_mask(model, 0.5, seed=1)
    mask.apply(model)
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(16, 784, generator=generator(2)), torch.arange(16) % 10
    nn.functional.cross_entropy(model(x), y).backward()
    optim.step()
    w = _weights(model, mask)["fc1.weight"]
    assert torch.count_nonzero(w[~mask["fc1.weight"]]) > 0


def test_mask_apply_and_gradients_by_hand() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    mask = Mask({"0.weight": torch.tensor([[1, 0, 1], [0, 1, 0]])})
    mask.apply(model)
    assert torch.equal(model[0].weight, torch.tensor([[1.0, 0, 3.0], [0, 5.0, 0]]))
    model[0].weight.grad = torch.ones(2, 3)
    mask.mask_gradients(model)
    assert torch.equal(model[0].weight.grad, mask["0.weight"].float())
    assert mask.num_total == 6 and mask.num_kept == 3
    assert mask.density == pytest.approx(0.5) and mask.sparsity == pytest.approx(0.5)


def test_mask_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        Mask({"w": torch.tensor([0.0, 0.5])})
    with pytest.raises(ValueError, match="at least one"):
        Mask({})
    model = build_model("lenet_300_100", seed=0)
    with pytest.raises(ValueError, match="no parameters named"):
        Mask({"nope.weight": torch.ones(2, dtype=torch.bool)}).apply(model)
    with pytest.raises(ValueError, match="criterion"):
        PruneConfig(criterion="largest")
    with pytest.raises(ValueError, match="fraction"):
        PruneConfig(fraction=1.0)
    with pytest.raises(ValueError, match="scope"):
        PruneConfig(scope="per-neuron")


def test_save_load_roundtrip_and_report(tmp_path) -> None:
    model = build_model("lenet5", seed=0)
    mask = _random_mask(model, 0.4, seed=5)
    mask.save(tmp_path / "level_1" / "mask.pth")
    loaded = Mask.load(tmp_path / "level_1" / "mask.pth")
    assert loaded == mask
    report = (tmp_path / "level_1" / "sparsity_report.json").read_text()
    assert f'"unpruned": {mask.num_kept}' in report and f'"total": {mask.num_total}' in report
    assert mask.num_total == sum(p.numel() for n, p in model.named_parameters()
                                 if n.endswith("weight"))


def test_drop_lowest_matches_numpy_brute_force() -> None:
    g = generator(0)
    keep = torch.rand(40, 30, generator=g) < 0.7
    score = torch.randn(40, 30, generator=g)
    new = drop_lowest(keep, score, 100, generator(1))
    kept_scores = np.sort(score[keep].numpy())
    threshold = kept_scores[100]  # the 100 lowest kept scores go (no ties in Gaussian scores)
    expected = keep.numpy() & (score.numpy() >= threshold)
    assert np.array_equal(new.numpy(), expected)
    assert int(new.sum()) == int(keep.sum()) - 100


def test_drop_lowest_breaks_ties_randomly_but_exactly() -> None:
    keep = torch.ones(1000, dtype=torch.bool)
    score = torch.zeros(1000)
    a = drop_lowest(keep, score, 300, generator(1))
    b = drop_lowest(keep, score, 300, generator(2))
    assert int(a.sum()) == int(b.sum()) == 700
    assert not torch.equal(a, b)
    assert torch.equal(a, drop_lowest(keep, score, 300, generator(1)))


def test_layerwise_density_follows_schedule_and_masks_only_shrink() -> None:
    model = build_model("lenet_300_100", seed=0)
    config = PruneConfig(fraction=0.2, scope="layerwise")
    fractions = layer_fractions(model, Mask.ones_like(model), config)
    assert fractions == {"fc1.weight": 0.2, "fc2.weight": 0.2, "fc.weight": 0.1}
    mask = Mask.ones_like(model)
    expected = {n: t.numel() for n, t in mask.items()}
    g = generator(3)
    for level in range(1, 8):
        weights = {n: torch.randn(t.shape, generator=g) for n, t in mask.items()}
        new = prune(model, mask, keep_scores("large_final", weights, None, mask.names(), g),
                    config, g)
        assert new.is_subset_of(mask)
        for n in new.names():
            expected[n] -= math.floor(fractions[n] * expected[n] + 0.5)
            assert int(new[n].sum()) == expected[n]
            assert int(new[n].sum()) / new[n].numel() == pytest.approx(
                (1 - fractions[n]) ** level, abs=2e-3)
        mask = new
    assert mask.layer_density()["fc1.weight"] == pytest.approx(0.8 ** 7, abs=1e-3)


def test_global_pruning_counts_and_open_lth_off_by_one() -> None:
    model = build_model("lenet_300_100", seed=0)
    mask = Mask.ones_like(model)
    weights = _weights(model, mask)
    scores = keep_scores("large_final", weights, None, mask.names(), generator(0))
    plain = prune(model, mask, scores, PruneConfig(scope="global", ignore=("fc.weight",)),
                  generator(1))
    parity = prune(model, mask, scores, PruneConfig(scope="global", ignore=("fc.weight",),
                                                    open_lth_off_by_one=True), generator(1))
    prunable = 784 * 300 + 300 * 100
    assert plain.num_kept == mask.num_total - math.ceil(0.2 * prunable)
    assert parity.num_kept == plain.num_kept - 1  # open_lth removes ceil(f n) + 1
    assert bool(plain["fc.weight"].all())  # ignored tensor untouched
    # global = one threshold across layers: every kept |w| >= every pruned |w|
    kept = torch.cat([weights[n][plain[n]].abs() for n in ("fc1.weight", "fc2.weight")])
    dropped = torch.cat([weights[n][~plain[n]].abs() for n in ("fc1.weight", "fc2.weight")])
    assert kept.min() >= dropped.max()


def test_criteria_keep_what_they_say() -> None:
    model = nn.Sequential(nn.Linear(10, 10, bias=False))
    mask = Mask.ones_like(model)
    final = {"0.weight": torch.arange(100, dtype=torch.float32).view(10, 10) - 50}
    init = {"0.weight": torch.zeros(10, 10)}
    config = PruneConfig(fraction=0.5, scope="layerwise")
    large = prune(model, mask, keep_scores("large_final", final, init, ["0.weight"],
                                           generator(0)), config, generator(1))
    small = prune(model, mask, keep_scores("small_final", final, init, ["0.weight"],
                                           generator(0)), config, generator(1))
    rand = prune(model, mask, keep_scores("random", final, init, ["0.weight"], generator(0)),
                 config, generator(1))
    mag = final["0.weight"].abs()
    assert mag[large["0.weight"]].min() >= mag[~large["0.weight"]].max()
    assert mag[small["0.weight"]].max() <= mag[~small["0.weight"]].min()
    assert large.num_kept == small.num_kept == rand.num_kept == 50
    assert rand != large and rand != small
    with pytest.raises(ValueError, match="initial"):
        keep_scores("movement", final, None, ["0.weight"], generator(0))


def test_one_shot_reaches_the_level_density() -> None:
    model = build_model("lenet_300_100", seed=0)
    mask = Mask.ones_like(model)
    scores = keep_scores("large_final", _weights(model, mask), None, mask.names(), generator(0))
    one_shot = prune(model, mask, scores, PruneConfig(), generator(1), levels=5)
    assert one_shot.layer_density()["fc1.weight"] == pytest.approx(0.8 ** 5, abs=1e-4)
    assert one_shot.layer_density()["fc.weight"] == pytest.approx(0.9 ** 5, abs=1e-3)


def test_shuffle_mask_keeps_counts() -> None:
    model = build_model("lenet_300_100", seed=0)
    mask = _random_mask(model, 0.3, seed=0)
    layer = shuffle_mask(mask, "layerwise", generator(1))
    glob = shuffle_mask(mask, "global", generator(1))
    assert all(int(layer[n].sum()) == int(mask[n].sum()) for n in mask.names())
    assert layer != mask and glob.num_kept == mask.num_kept


def test_layerwise_pruning_leaves_ignored_tensors_alone():
    from deep_lottery.device import generator as torch_generator

    model = build_model("lenet_300_100", seed=0)
    mask = Mask.ones_like(model)
    scores = {n: p.detach().abs() for n, p in model.named_parameters() if n in mask.names()}
    config = PruneConfig(fraction=0.2, scope="layerwise", ignore=("fc1.weight",))
    pruned = prune(model, mask, scores, config, torch_generator(0), levels=2)
    assert pruned.layer_density()["fc1.weight"] == 1.0
    assert pruned.layer_density()["fc2.weight"] == pytest.approx(0.64, abs=1e-3)
    with pytest.raises(ValueError, match="not prunable tensors"):
        prune(model, mask, scores, PruneConfig(scope="layerwise", ignore=("nope",)),
              torch_generator(0))


def test_gradient_masking_alone_keeps_pruned_weights_zero_and_check_catches_a_leak():
    """SGD (momentum, weight decay, Nesterov) and Adam keep zeros: ``train`` masks only their
    gradients; an optimizer registered without ``keeps_zeros`` gets its weights re-masked."""
    import dataclasses

    from deep_lottery.data import Splits, TensorData
    from deep_lottery.models import build_model
    from deep_lottery.training import OPTIMIZERS, TrainConfig, train

    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randn(64, 1, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
    splits = Splits(data, data, data, 3, {})

    def model():
        return build_model("mlp", seed=0, input_shape=(1, 4, 4), num_classes=3, hidden=(8,))

    keep = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model().named_parameters()
            if n.endswith("weight")}
    mask = Mask(keep)
    base = TrainConfig(iterations=25, batch_size=16, optimizer="sgd", lr=0.1, momentum=0.9,
                       weight_decay=0.01, nesterov=True, eval_every=5)

    @OPTIMIZERS.register("leaky-test-sgd")
    def _leaky(params, cfg, fused):  # every step adds 1e-3 to each entry (pruned ones included)
        class Leaky(torch.optim.SGD):
            @torch.no_grad()
            def step(self, closure=None):
                super().step(closure)
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(1e-3)
        return Leaky(params, lr=cfg.lr)

    try:
        for cfg in (base, dataclasses.replace(base, optimizer="adam", lr=0.01),
                    dataclasses.replace(base, optimizer="leaky-test-sgd")):
            result = train(model(), mask, splits, cfg, task="classification",
                           device=torch.device("cpu"))
            for name, k in keep.items():
                assert torch.all(result.final_state[name][~k] == 0), (cfg.optimizer, name)
    finally:
        OPTIMIZERS.unregister("leaky-test-sgd")
    net = model()
    mask.apply(net)
    enforcer = mask.enforcer(net, weights_after_step=False)
    enforcer.check()
    with torch.no_grad():
        name = next(iter(keep))
        dict(net.named_parameters())[name][~keep[name]] += 1.0
    with pytest.raises(RuntimeError, match="no longer zero"):
        enforcer.check()

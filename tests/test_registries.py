"""Every extension point is a ``lottery_common.Registry``: unknown names are refused with a
one-line ValueError listing the known ones, and a new criterion, IMP branch, model or layer type
is one function (or class) plus one registration, then works end to end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from deep_lottery.data import Splits, TensorData, teacher_splits
from deep_lottery.device import generator
from deep_lottery.imp import BRANCHES, BranchContext, IMPConfig, run_imp
from deep_lottery.layers import LAYER_TYPES, LayerType, layer_type
from deep_lottery.masks import Mask
from deep_lottery.models import INITS, MODELS, build_model, initialize, prunable_names
from deep_lottery.pruning import CRITERIA, PruneConfig, keep_scores, prune
from deep_lottery.training import OPTIMIZERS, SCHEDULES, TrainConfig, train
from lottery_common import Registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REGISTRIES = {"MODELS": MODELS, "INITS": INITS, "LAYER_TYPES": LAYER_TYPES,
              "CRITERIA": CRITERIA, "BRANCHES": BRANCHES, "OPTIMIZERS": OPTIMIZERS,
              "SCHEDULES": SCHEDULES}


def assert_lists_known(message: str, registry: Registry) -> None:
    assert "\n" not in message
    assert len(registry) > 0
    for name in registry.names():
        assert repr(name) in message or name in message, (name, message)


@pytest.mark.parametrize("key", list(REGISTRIES))
def test_unknown_names_are_refused_in_one_line(key: str) -> None:
    registry = REGISTRIES[key]
    with pytest.raises(ValueError, match="no-such-entry") as info:
        registry["no-such-entry"]
    assert_lists_known(str(info.value), registry)
    assert str(info.value).startswith(f"unknown {registry.kind}")
    for bad in (None, 3, ""):
        with pytest.raises(ValueError):
            registry.check(bad)
    assert "no-such-entry" not in registry
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.names()[0])(object())
    with pytest.raises(ValueError, match="no-such-entry"):
        registry.unregister("no-such-entry")


def test_the_front_doors_refuse_unknown_names_listing_the_known_ones() -> None:
    calls = [
        (MODELS, lambda: build_model("no-such-entry", seed=0)),
        (INITS, lambda: build_model("mlp", seed=0, init="no-such-entry")),
        (INITS, lambda: initialize(nn.Linear(2, 2), "no-such-entry", 0)),
        (LAYER_TYPES, lambda: build_model("mlp", seed=0, layers="no-such-entry")),
        (LAYER_TYPES, lambda: layer_type("no-such-entry")),
        (OPTIMIZERS, lambda: TrainConfig(iterations=1, optimizer="no-such-entry")),
        (SCHEDULES, lambda: TrainConfig(iterations=1, schedule="no-such-entry")),
        (CRITERIA, lambda: PruneConfig(criterion="no-such-entry")),
        (CRITERIA, lambda: keep_scores("no-such-entry", {}, None, [], generator(0))),
    ]
    for registry, call in calls:
        with pytest.raises(ValueError, match="no-such-entry") as info:
            call()
        assert_lists_known(str(info.value), registry)
    tiny = teacher_splits(d=4, K=1, r_star=2, n_train=10, n_val=5, n_test=5, noise_level=0.0,
                          seed=0)
    with pytest.raises(ValueError, match="no-such-entry") as info:
        run_imp(lambda s: build_model("student", seed=s, d=4, K=1), tiny,
                IMPConfig(levels=1, train=TrainConfig(iterations=2)), task="regression",
                device="cpu", branches=("imp", "no-such-entry"), progress=False)
    assert_lists_known(str(info.value), BRANCHES)


# --- temporary registrations -------------------------------------------------------------------

@pytest.fixture
def temporary() -> Iterator[list[tuple[Registry, str]]]:
    """Entries appended here as (registry, name) are unregistered after the test."""
    added: list[tuple[Registry, str]] = []
    try:
        yield added
    finally:
        for registry, name in reversed(added):
            if name in registry:
                registry.unregister(name)


def _keep_first(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    """A new criterion: keep the lowest flat indices (score = -index)."""
    return -torch.arange(w.numel(), dtype=torch.float32, device=w.device).view_as(w)


def _grew(w: torch.Tensor, w0: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    """A new criterion reading the initial weights: keep what grew, ``|w| - |w0|``."""
    return w.abs() - w0.abs()


def test_a_new_criterion_is_one_function(temporary, tmp_path) -> None:
    CRITERIA.register("keep_first")(_keep_first)
    CRITERIA.register("test_grew", needs_init=True)(_grew)
    temporary += [(CRITERIA, "keep_first"), (CRITERIA, "test_grew")]
    assert "test_grew" in CRITERIA.needs_init and "keep_first" not in CRITERIA.needs_init

    model = build_model("student", seed=0, d=10, K=3)
    mask = Mask.ones_like(model)
    w = {"hidden.weight": model.hidden.weight.detach()}
    scores = keep_scores("keep_first", w, None, ["hidden.weight"], generator(0))
    pruned = prune(model, mask, scores, PruneConfig(fraction=0.4, criterion="keep_first"),
                   generator(1))
    assert torch.equal(pruned["hidden.weight"].flatten(), torch.arange(30) < 18)
    with pytest.raises(ValueError, match="initial"):
        keep_scores("test_grew", w, None, ["hidden.weight"], generator(0))

    splits = teacher_splits(d=10, K=3, r_star=3, n_train=60, n_val=20, n_test=20,
                            noise_level=1e-3, seed=0)
    config = IMPConfig(levels=2, train=TrainConfig(iterations=6, batch_size=30, lr=1e-2,
                                                   eval_every=3),
                       prune=PruneConfig(fraction=0.5, criterion="keep_first"))
    records = run_imp(lambda s: build_model("student", seed=s, d=10, K=3), splits, config,
                      task="regression", device="cpu", progress=False, out_dir=tmp_path)
    assert [r["num_kept"] for r in records] == [30, 15, 7]  # round(0.5 * 15) = 8 pruned
    final_mask = Mask.load(tmp_path / "imp" / "level_2" / "mask.pth")["hidden.weight"]
    assert torch.equal(final_mask.flatten(), torch.arange(30) < 7)  # the criterion decided

    CRITERIA.unregister("test_grew")
    assert "test_grew" not in CRITERIA and "test_grew" not in CRITERIA.needs_init


def test_a_new_imp_branch_is_one_function(temporary) -> None:
    seen: list[int] = []

    @BRANCHES.register("test_dense_restart")
    def _dense_restart(ctx: BranchContext, level: int) -> tuple[Mask, nn.Module]:
        """Control: IMP's kept count, but the first weights in flat order, rewound weights."""
        seen.append(level)
        like = ctx.masks[level]
        mask = Mask({n: (torch.arange(t.numel()) < int(t.sum())).view_as(t)
                     for n, t in like.items()})
        return mask, ctx.masked_start(ctx.config.seed, ctx.rewind_state, mask)

    temporary.append((BRANCHES, "test_dense_restart"))
    splits = teacher_splits(d=8, K=2, r_star=2, n_train=60, n_val=20, n_test=20,
                            noise_level=1e-3, seed=1)
    config = IMPConfig(levels=2, train=TrainConfig(iterations=6, batch_size=30, lr=1e-2,
                                                   eval_every=3))
    records = run_imp(lambda s: build_model("student", seed=s, d=8, K=2), splits, config,
                      task="regression", device="cpu",
                      branches=("imp", "test_dense_restart"), progress=False)
    assert seen == [1, 2]
    imp = {r["level"]: r for r in records if r["branch"] == "imp"}
    ours = {r["level"]: r for r in records if r["branch"] == "test_dense_restart"}
    assert sorted(ours) == [1, 2]
    for level, record in ours.items():
        assert record["num_kept"] == imp[level]["num_kept"]
        assert record["start_iteration"] == 0 and record["test_metric_end"] >= 0


class _Halved:
    """Mixin of the new layer type: the forward weight is ``W / 2``."""

    weight: nn.Parameter

    def effective_weight(self) -> torch.Tensor:
        return self.weight * 0.5


class HalvedLinear(_Halved, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class HalvedConv2d(_Halved, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class Halved(LayerType):
    name = "test_halved"
    linear_class = HalvedLinear
    conv_class = HalvedConv2d


class TinyNet(nn.Module):
    """A new model: conv 3x3 (pad 1) -> ReLU -> global average -> linear."""

    output_layer = "fc.weight"

    def __init__(self, in_channels: int, channels: int, num_classes: int, layers: LayerType
                 ) -> None:
        super().__init__()
        self.conv = layers.conv(in_channels, channels, 3, padding=1)
        self.fc = layers.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _tiny_net(*, layers: LayerType, num_classes: int, input_shape, channels: int = 4
              ) -> nn.Module:
    return TinyNet((input_shape or (1, 8, 8))[0], channels, num_classes, layers)


def test_a_new_layer_type_and_a_new_model_work_everywhere(temporary) -> None:
    LAYER_TYPES.register("test_halved")(Halved)
    MODELS.register("test_tiny")(_tiny_net)
    temporary += [(LAYER_TYPES, "test_halved"), (MODELS, "test_tiny")]

    # the new layer type: with zero biases and ReLU, two halved layers give a quarter
    dense = build_model("mlp", seed=0, init="kaiming", hidden=(8,), input_shape=(1, 3, 3))
    halved = build_model("mlp", seed=0, init="kaiming", hidden=(8,), input_shape=(1, 3, 3),
                         layers="test_halved")
    assert isinstance(halved.fc, HalvedLinear)
    x = torch.randn(5, 1, 3, 3)
    assert torch.equal(halved(x), 0.25 * dense(x))

    # the new model, in every layer type (the new one included)
    assert "test_halved" in LAYER_TYPES.names()
    for name in LAYER_TYPES.names():
        options = {"density": 0.5} if name == "score" else {}
        model = build_model("test_tiny", seed=1, num_classes=3, input_shape=(2, 6, 6),
                            layers=name, channels=5, **options)
        assert isinstance(model.conv, LAYER_TYPES[name].conv_class)
        assert isinstance(model.fc, LAYER_TYPES[name].linear_class)
        assert prunable_names(model) == ["conv.weight", "fc.weight"]
        assert model(torch.randn(2, 2, 6, 6)).shape == (2, 3)
    with pytest.raises(ValueError, match="no option"):
        build_model("test_tiny", seed=0, width=2)

    # and both through the IMP driver: masked training and pruning of the new model's new layers
    g = generator(2)
    xs = torch.randn(90, 2, 6, 6, generator=g)
    ys = torch.randint(0, 3, (90,), generator=g)
    splits = Splits(TensorData(xs[:60], ys[:60]), TensorData(xs[60:75], ys[60:75]),
                    TensorData(xs[75:], ys[75:]), 3)
    config = IMPConfig(levels=1, train=TrainConfig(iterations=4, batch_size=20, eval_every=2),
                       prune=PruneConfig(fraction=0.5))
    records = run_imp(lambda s: build_model("test_tiny", seed=s, num_classes=3,
                                            input_shape=(2, 6, 6), layers="test_halved",
                                            channels=5),
                      splits, config, task="classification", device="cpu", progress=False)
    total = 5 * 2 * 9 + 5 * 3
    assert [r["num_kept"] for r in records] == [total, 45 + 15 - 4]  # fc loses 25% (output)
    model = build_model("test_tiny", seed=0, num_classes=3, input_shape=(2, 6, 6),
                        layers="test_halved")
    mask = Mask({n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()
                 if n in prunable_names(model)})
    train(model, mask, splits, TrainConfig(iterations=3, batch_size=20), task="classification",
          device=torch.device("cpu"))
    for n, keep in mask.items():
        assert int(torch.count_nonzero(dict(model.named_parameters())[n][~keep])) == 0


def test_unregister_removes_the_entry(temporary) -> None:
    MODELS.register("test_tiny")(_tiny_net)
    temporary.append((MODELS, "test_tiny"))
    assert MODELS.unregister("test_tiny") is _tiny_net
    with pytest.raises(ValueError, match="unknown model 'test_tiny'"):
        build_model("test_tiny", seed=0)

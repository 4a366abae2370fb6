"""A killed training run resumes inside the level from its checkpoint and ends with exactly the
weights of an uninterrupted run: model, optimizer (momentum / Adam moments), early-stopping
bookkeeping, rewind capture, augmentation and dropout random states (issue 12)."""

from __future__ import annotations

import pytest
import torch

from deep_lottery.data import Splits, TensorData
from deep_lottery.imp import IMPConfig, run_imp
from deep_lottery.masks import Mask
from deep_lottery.models import build_model
from deep_lottery.pruning import PruneConfig
from deep_lottery.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


class Killed(Exception):
    pass


class KillAt:
    """A stateless step hook that raises once the run reaches ``iteration`` steps."""

    def __init__(self, iteration: int) -> None:
        self.iteration, self.steps = iteration, 0

    def before_step(self) -> None:
        return None

    def after_step(self) -> None:
        self.steps += 1
        if self.steps == self.iteration:
            raise Killed


@pytest.fixture(scope="module")
def images() -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 12, 12, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return Splits(TensorData(x[:200], y[:200]), TensorData(x[200:250], y[200:250]),
                  TensorData(x[250:], y[250:]), {})


def conv_with_dropout(seed: int) -> torch.nn.Module:
    return build_model("conv2", seed=seed, init="kaiming", input_shape=(1, 12, 12), width=0.125,
                       num_classes=4, dropout=0.5)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_killed_run_resumes_to_the_same_weights(images, tmp_path, optimizer, momentum) -> None:
    cfg = TrainConfig(iterations=60, batch_size=32, optimizer=optimizer, lr=0.05 if
                      optimizer == "sgd" else 1e-3, momentum=momentum, eval_every=7,
                      augment=True, data_order_seed=3, amp=False, test_history=True)
    mask = Mask.ones_like(conv_with_dropout(0))
    reference = train(conv_with_dropout(0), mask, images, cfg, task="classification",
                      device=CPU, capture_iteration=20)
    path = tmp_path / "checkpoint.pth"
    with pytest.raises(Killed):
        train(conv_with_dropout(0), mask, images, cfg, task="classification", device=CPU,
              capture_iteration=20, checkpoint=path, checkpoint_every=10, hooks=[KillAt(37)])
    saved = torch.load(path, weights_only=False)
    assert saved["iteration"] == 30  # the last checkpoint before the kill
    resumed = train(conv_with_dropout(5), mask, images, cfg, task="classification", device=CPU,
                    capture_iteration=20, checkpoint=path, checkpoint_every=10)
    assert not path.exists()  # a finished run removes its checkpoint
    for name, value in reference.final_state.items():
        assert torch.equal(value, resumed.final_state[name]), name
    for name, value in reference.captured_state.items():
        assert torch.equal(value, resumed.captured_state[name]), name
    assert resumed.history == reference.history
    assert resumed.early_stop_iteration == reference.early_stop_iteration
    assert resumed.test_metric_at_stop == reference.test_metric_at_stop
    assert len(reference.history["test_metric"]) == len(reference.history["iteration"])


def test_a_checkpoint_of_another_run_is_refused(images, tmp_path) -> None:
    cfg = TrainConfig(iterations=20, batch_size=32, amp=False, eval_every=5)
    path = tmp_path / "checkpoint.pth"
    with pytest.raises(Killed):
        train(conv_with_dropout(0), None, images, cfg, task="classification", device=CPU,
              checkpoint=path, checkpoint_every=5, hooks=[KillAt(12)])
    other = TrainConfig(iterations=20, batch_size=32, amp=False, eval_every=5, lr=1e-2)
    with pytest.raises(ValueError, match="checkpoint of another training run"):
        train(conv_with_dropout(0), None, images, other, task="classification", device=CPU,
              checkpoint=path, checkpoint_every=5)


def test_imp_resumes_inside_a_killed_level(images, tmp_path, monkeypatch) -> None:
    import deep_lottery.imp as imp_module

    config = IMPConfig(levels=2, train=TrainConfig(iterations=40, batch_size=32, lr=1e-3,
                                                   eval_every=10, amp=False, augment=True),
                       prune=PruneConfig(fraction=0.3), seed=1)
    reference = run_imp(conv_with_dropout, images, config, task="classification", device="cpu",
                        progress=False)
    real_train = imp_module.train

    def killed_in_level_1(*args, **kwargs):
        if kwargs["desc"] == "imp L1":
            kwargs["hooks"] = [KillAt(25)]
        return real_train(*args, **kwargs)

    monkeypatch.setattr(imp_module, "train", killed_in_level_1)
    with pytest.raises(Killed):
        run_imp(conv_with_dropout, images, config, task="classification", device="cpu",
                out_dir=tmp_path, progress=False, checkpoint_every=10)
    assert (tmp_path / "imp" / "level_1" / "checkpoint.pth").exists()
    monkeypatch.setattr(imp_module, "train", real_train)
    resumed = run_imp(conv_with_dropout, images, config, task="classification", device="cpu",
                      out_dir=tmp_path, progress=False, checkpoint_every=10)
    for a, b in zip(reference, resumed, strict=True):
        for key in ("density", "early_stop_iteration", "test_metric_end", "val_loss_min",
                    "history"):
            assert a[key] == b[key], key
    assert not (tmp_path / "imp" / "level_1" / "checkpoint.pth").exists()

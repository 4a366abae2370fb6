"""Model shapes and sizes, initializations, the student against the NumPy teacher, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deep_lottery.device import choose_device
from deep_lottery.masks import Mask
from deep_lottery.models import build_model, prunable_names
from lottery_common import derive_seed
from sparse_teacher.teacher import draw_teacher, network_outputs

# prunable weights (Linear + Conv2d .weight) of each model
PRUNABLE = {
    "lenet_300_100": 784 * 300 + 300 * 100 + 100 * 10,
    "lenet5": 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10,
    "conv2": 3 * 64 * 9 + 64 * 64 * 9 + 16 * 16 * 64 * 256 + 256 * 256 + 2560,
    "conv4": (3 * 64 + 64 * 64 + 64 * 128 + 128 * 128) * 9 + 8 * 8 * 128 * 256 + 256 * 256 + 2560,
    "conv6": (3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256) * 9
    + 4 * 4 * 256 * 256 + 256 * 256 + 2560,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.mark.parametrize("name,shape", [("lenet_300_100", (1, 28, 28)), ("lenet5", (1, 28, 28)),
                                        ("conv2", (3, 32, 32)), ("conv4", (3, 32, 32)),
                                        ("conv6", (3, 32, 32)), ("resnet20", (3, 32, 32)),
                                        ("vgg16", (3, 32, 32)), ("vgg19", (3, 32, 32))])
def test_output_shapes_and_prunable_counts(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, seed=0, init="kaiming", num_classes=10)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 10)
    total = Mask.ones_like(model).num_total
    if name in PRUNABLE:
        assert total == PRUNABLE[name]
    assert model.output_layer in prunable_names(model)
    assert all(n.endswith(".weight") for n in prunable_names(model))


def test_resnet20_and_vgg_sizes() -> None:
    """ResNet-20 has ~0.27M weights and VGG-19 ~20M (Frankle & Carbin, Fig. 2)."""
    assert 260_000 < Mask.ones_like(build_model("resnet20", seed=0)).num_total < 280_000
    assert 19_900_000 < Mask.ones_like(build_model("vgg19", seed=0)).num_total < 20_100_000


def test_glorot_and_kaiming_scales() -> None:
    glorot = build_model("lenet_300_100", seed=1, init="glorot").fc1.weight.detach()
    assert float(glorot.std()) == pytest.approx(np.sqrt(2 / (784 + 300)), rel=0.02)
    kaiming = build_model("lenet_300_100", seed=1, init="kaiming").fc1.weight.detach()
    assert float(kaiming.std()) == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    net = build_model("resnet20", seed=1, init="kaiming").requires_grad_(False)
    assert 0 <= float(net.bn.weight.min()) and float(net.bn.weight.max()) <= 1
    assert float(net.bn.bias.abs().max()) == 0
    assert float(build_model("lenet5", seed=1).fc1.bias.detach().abs().max()) == 0
    with pytest.raises(ValueError, match="init"):
        build_model("lenet5", seed=0, init="orthogonal")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet", seed=0)


def test_seeds_control_initialization() -> None:
    a = build_model("lenet5", seed=3).state_dict()
    b = build_model("lenet5", seed=3).state_dict()
    c = build_model("lenet5", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])
    assert derive_seed(1, 2) != derive_seed(2, 1) and derive_seed(1, 2) == derive_seed(1, 2)


def test_student_equals_numpy_teacher_network() -> None:
    teacher = draw_teacher(20, 4, 5, seed=0)
    A, _ = teacher.augmented()  # (d, K)
    model = build_model("student", seed=0, d=20, K=4)
    with torch.no_grad():
        model.hidden.weight.copy_(torch.from_numpy(A.T))
    X = np.random.default_rng(1).standard_normal((30, 20))
    ours = model.double()(torch.from_numpy(X)).detach().numpy()
    assert np.allclose(ours, network_outputs(teacher.weights, teacher.supports, X), atol=1e-12)
    assert model.output_layer is None


def test_student_without_d_or_k_names_what_it_got() -> None:
    with pytest.raises(ValueError, match=r"the student needs d and K \(got d=None, K=None\)"):
        build_model("student", seed=0)
    with pytest.raises(ValueError, match=r"\(got d=20, K=None\)"):
        build_model("student", seed=0, d=20)


def test_choose_device() -> None:
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device must be one of"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            choose_device("cuda")

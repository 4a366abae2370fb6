"""Models of the lottery-ticket papers and their initializations.

* ``Student``: the one-hidden-layer ReLU student of Zhang et al. (NeurIPS 2021, Sec. 2),
  ``f(x) = (1/K) sum_j relu(w_j . x)``; only the first layer is trained (the output is the average).
* ``Lenet300100``: fc 784-300-100-10 (Frankle & Carbin 2019, Fig. 2; open_lth ``mnist_lenet_300_100``).
* ``Lenet5``: conv 6@5x5 (pad 2), pool, conv 16@5x5, pool, fc 120-84-10 (LeCun et al. 1998;
  the model of Zhang et al. 2021, Fig. 7).
* ``ConvNet`` (Conv-2/4/6): 3x3 convs with padding 1 and 2x2 max-pools, fc 256-256-10 (F&C Fig. 2).
* ``ResNet20``, ``VGG`` (16/19): as open_lth ``cifar_resnet_20`` / ``cifar_vgg_16/19``.

Initialization (``init``): ``"glorot"`` is Gaussian Glorot, ``N(0, 2/(fan_in + fan_out))``, as in
Frankle & Carbin; ``"kaiming"`` is ``kaiming_normal_`` with PyTorch's defaults (fan_in,
gain sqrt(2)) as in open_lth. Biases start at zero; BatchNorm has gamma ~ U(0, 1) and beta = 0
(open_lth ``bn_init='uniform'``). All draws come from one CPU ``torch.Generator`` seeded by
``seed``, so the same seed gives the same weights on every device.

Each model names its output layer in ``output_layer`` (the ``.weight`` pruned at half rate in
layer-wise IMP, or left out of global pruning), ``None`` for the student whose output is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_int
from .device import generator

INITS = ("glorot", "kaiming")
MODELS = ("student", "lenet_300_100", "lenet5", "conv2", "conv4", "conv6", "resnet20", "vgg16",
          "vgg19")


class Student(nn.Module):
    """``f(x) = (1/K) sum_j relu(w_j . x)`` with weights ``hidden.weight`` of shape (K, d)."""

    output_layer: str | None = None

    def __init__(self, d: int, K: int) -> None:  # noqa: N803 (the paper's symbol)
        super().__init__()
        self.hidden = nn.Linear(check_int("d", d, minimum=1), check_int("K", K, minimum=1),
                                bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x)).mean(dim=1)


class Lenet300100(nn.Module):
    output_layer = "fc.weight"

    def __init__(self, num_classes: int = 10, in_features: int = 784) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc(torch.relu(self.fc2(x)))


class Lenet5(nn.Module):
    output_layer = "fc.weight"

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc(torch.relu(self.fc2(x)))


CONV_PLANS = {"conv2": [64, 64, "M"], "conv4": [64, 64, "M", 128, 128, "M"],
              "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"]}


class ConvNet(nn.Module):
    """Conv-2/4/6 of Frankle & Carbin (Fig. 2): 3x3 convs (pad 1), 2x2 max-pools, fc 256-256."""

    output_layer = "fc.weight"

    def __init__(self, plan: Sequence[int | str], num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(channels * size * size, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self.features(x).flatten(1)))
        return self.fc(torch.relu(self.fc2(x)))


class _Block(nn.Module):
    """open_lth ResNet block: conv-BN-ReLU-conv-BN plus (1x1 conv + BN when the shape changes)."""

    def __init__(self, f_in: int, f_out: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(f_out))
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """open_lth ``cifar_resnet_20``: 3 stages x 3 blocks of widths 16/32/64, avgpool, fc 64-10."""

    output_layer = "fc.weight"

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        f_in = width
        for stage, f_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(3):
                blocks.append(_Block(f_in, f_out, downsample=(stage > 0 and b == 0)))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))


VGG_PLANS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512],
}


class VGG(nn.Module):
    """open_lth ``cifar_vgg_16/19``: conv(+bias)-BN-ReLU, max-pools, AvgPool2d(2), fc 512-10."""

    output_layer = "fc.weight"

    def __init__(self, plan: Sequence[int | str], num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1),
                           nn.BatchNorm2d(int(item)), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool2d(self.features(x), 2)
        return self.fc(x.flatten(1))


def initialize(model: nn.Module, init: str, seed: int) -> nn.Module:
    """Draw every weight of ``model`` in place (see the module docstring); returns the model."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    g = generator(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                if init == "glorot":
                    nn.init.xavier_normal_(module.weight, generator=g)
                else:
                    nn.init.kaiming_normal_(module.weight, generator=g)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.0, 1.0, generator=g)
                module.bias.zero_()
    return model


def build_model(name: str, *, seed: int, init: str = "glorot", num_classes: int = 10,
                in_channels: int = 1, d: int | None = None, K: int | None = None  # noqa: N803
                ) -> nn.Module:
    """A freshly initialized model by name (``MODELS``), on the CPU.

    ``d`` and ``K`` are the student's input dimension and width; ``in_channels`` is for Lenet-5
    (1 for MNIST) and the input size of Lenet-300-100 is ``in_channels * 28 * 28``.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    num_classes = check_int("num_classes", num_classes, minimum=1)
    model: nn.Module
    if name == "student":
        if d is None or K is None:
            raise ValueError(f"the student needs d and K (got d={d!r}, K={K!r})")
        model = Student(d, K)
    elif name == "lenet_300_100":
        model = Lenet300100(num_classes, in_features=in_channels * 28 * 28)
    elif name == "lenet5":
        model = Lenet5(num_classes, in_channels)
    elif name in CONV_PLANS:
        model = ConvNet(CONV_PLANS[name], num_classes)
    elif name == "resnet20":
        model = ResNet20(num_classes)
    else:
        model = VGG(VGG_PLANS[name], num_classes)
    return initialize(model, init, seed)


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the ``.weight`` of every Linear and Conv2d (biases and BatchNorm are never pruned)."""
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d))]


def is_conv_weight(model: nn.Module, name: str) -> bool:
    """Whether the prunable tensor ``name`` belongs to a convolution."""
    module_name = name.rsplit(".", 1)[0] if "." in name else ""
    return isinstance(model.get_submodule(module_name), nn.Conv2d)

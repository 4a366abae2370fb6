"""Models of the lottery-ticket papers, a registry of builders, and their initializations.

Every architecture is written once against a ``LayerType`` (``layers``): ``build_model(name,
layers="score", density=0.5)`` gives its Edge-Popup flavour, ``layers="masked"`` its masked one,
without copies. Registered builders (``MODELS``; add one with ``@MODELS.register(name)``):

* ``student``: the one-hidden-layer ReLU student of Zhang et al. (NeurIPS 2021, Sec. 2),
  ``f(x) = (1/K) sum_j relu(w_j . x)``; only the first layer is trained (the output is the average).
* ``mlp``: a ReLU MLP ``d_0 - hidden... - classes`` (bias optional): the target network of the
  strong-lottery-ticket construction (Pensia et al.'s 784-500-10 without bias), the FC net of
  Edge-Popup (784-300-100-10 without bias) and Xiong et al.'s PGD + Edge-Popup net.
* ``lenet_300_100``: fc 784-300-100-10 (Frankle & Carbin 2019, Fig. 2; open_lth ``mnist_lenet_300_100``).
* ``lenet5``: conv 6@5x5 (pad 2), pool, conv 16@5x5, pool, fc 120-84-10 (LeCun et al. 1998;
  the model of Zhang et al. 2021, Fig. 7).
* ``conv2/4/6/8``: 3x3 convs with padding 1 and 2x2 max-pools, fc 256-256-10 (F&C Fig. 2; Conv-8 of
  Ramanujan et al.); ``width`` scales the channels, and any input shape works (28x28x1 for MNIST).
* ``resnet20``, ``vgg16``, ``vgg19``: as open_lth ``cifar_resnet_20`` / ``cifar_vgg_16/19``.

Initialization (``INITS``, applied to the weight of every Linear and Conv2d): ``"glorot"`` is
Gaussian Glorot, ``N(0, 2/(fan_in + fan_out))``, as in Frankle & Carbin; ``"kaiming"`` (alias of
``"kaiming_normal"``) is ``N(0, 2/fan_in)`` as in open_lth; ``"signed_constant"`` is
``+-sqrt(2/fan_in)`` with random signs (Ramanujan et al., Sec. 4); the ``"scaled_"`` variants use
the fan-in of the subnetwork, ``density * fan_in``, so that a layer keeping a fraction ``density``
of its inputs has the output variance of a dense Kaiming layer. (The paper's form; the reference
code multiplies the fan by ``1 - prune_rate`` instead, which agrees only at density 1/2.) A layer
without a ``density`` (dense, masked) uses 1. Biases start at zero; BatchNorm has gamma ~ U(0, 1)
and beta = 0 (open_lth ``bn_init='uniform'``). Weights come from one CPU ``torch.Generator`` seeded
by ``seed``, so the same seed gives the same weights on every device and in every layer type (a
score model holds exactly the weights of the dense model of the same seed and init); the scores of
score layers, U(+-1/sqrt(fan_in)), come from a second stream, ``derive_seed(seed, "scores")``.

Each model names its output layer in ``output_layer`` (the ``.weight`` pruned at half rate in
layer-wise IMP, or left out of global pruning), ``None`` for the student whose output is fixed.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lottery_common import Registry, check_float, check_int, derive_seed

from .device import generator
from .layers import SCORE_LAYERS, LayerType, layer_type

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
INITS: Registry[Callable[..., None]] = Registry("initialization")

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)


class Student(nn.Module):
    """``f(x) = (1/K) sum_j relu(w_j . x)`` with weights ``hidden.weight`` of shape (K, d)."""

    output_layer: str | None = None

    def __init__(self, d: int, K: int, layers: LayerType | None = None) -> None:  # noqa: N803
        super().__init__()
        layers = layers or layer_type("dense")
        self.hidden = layers.linear(check_int("d", d, minimum=1), check_int("K", K, minimum=1),
                                    bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x)).mean(dim=1)


class MLP(nn.Module):
    """``x -> relu(W_1 x) -> ... -> W_L h`` on flattened inputs; the last layer is ``fc``."""

    output_layer = "fc.weight"

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int = 10,
                 bias: bool = True, layers: LayerType | None = None) -> None:
        super().__init__()
        layers = layers or layer_type("dense")
        widths = [check_int("in_features", in_features, minimum=1),
                  *(check_int("hidden width", h, minimum=1) for h in hidden)]
        self.hidden = nn.ModuleList(layers.linear(a, b, bias=bias)
                                    for a, b in zip(widths[:-1], widths[1:]))
        self.fc = layers.linear(widths[-1], num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.fc(x)


class Lenet300100(nn.Module):
    output_layer = "fc.weight"

    def __init__(self, num_classes: int = 10, in_features: int = 784,
                 layers: LayerType | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        layers = layers or layer_type("dense")
        self.fc1 = layers.linear(in_features, 300)
        self.fc2 = layers.linear(300, 100)
        self.fc = layers.linear(100, num_classes)
        self.drop = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.fc1(x.flatten(1))))
        return self.fc(self.drop(torch.relu(self.fc2(x))))


class Lenet5(nn.Module):
    output_layer = "fc.weight"

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 layers: LayerType | None = None) -> None:
        super().__init__()
        layers = layers or layer_type("dense")
        self.conv1 = layers.conv(in_channels, 6, 5, padding=2)
        self.conv2 = layers.conv(6, 16, 5)
        self.fc1 = layers.linear(16 * 5 * 5, 120)
        self.fc2 = layers.linear(120, 84)
        self.fc = layers.linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc(torch.relu(self.fc2(x)))


CONV_PLANS = {"conv2": [64, 64, "M"], "conv4": [64, 64, "M", 128, 128, "M"],
              "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
              "conv8": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"]}


class ConvNet(nn.Module):
    """Conv-2/4/6/8 (F&C Fig. 2; Ramanujan et al.): 3x3 convs (pad 1), 2x2 max-pools, fc 256-256.

    ``width`` multiplies every channel count (at least 1 channel); the first fc layer takes
    whatever the convolutions leave of an ``in_channels x image_size x image_size`` input.
    ``dropout`` (F&C Fig. 6 use 0.5) acts after each hidden fc layer."""

    output_layer = "fc.weight"

    def __init__(self, plan: Sequence[int | str], num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, width: float = 1.0, bias: bool = True,
                 layers: LayerType | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        layers = layers or layer_type("dense")
        width = check_float("width", width, low=0.0, low_open=True)
        modules: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in plan:
            if item == "M":
                modules.append(nn.MaxPool2d(2))
                size //= 2
            else:
                out = max(1, round(int(item) * width))
                modules += [layers.conv(channels, out, 3, padding=1, bias=bias), nn.ReLU()]
                channels = out
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for {plan.count('M')} "
                             "max-pools")
        self.features = nn.Sequential(*modules)
        self.fc1 = layers.linear(channels * size * size, 256, bias=bias)
        self.fc2 = layers.linear(256, 256, bias=bias)
        self.fc = layers.linear(256, num_classes, bias=bias)
        self.drop = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.fc1(self.features(x).flatten(1))))
        return self.fc(self.drop(torch.relu(self.fc2(x))))


class _Block(nn.Module):
    """open_lth ResNet block: conv-BN-ReLU-conv-BN plus (1x1 conv + BN when the shape changes)."""

    def __init__(self, f_in: int, f_out: int, downsample: bool, layers: LayerType) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = layers.conv(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = layers.conv(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(layers.conv(f_in, f_out, 1, stride=stride, bias=False),
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

    def __init__(self, num_classes: int = 10, width: int = 16, in_channels: int = 3,
                 layers: LayerType | None = None) -> None:
        super().__init__()
        layers = layers or layer_type("dense")
        self.conv = layers.conv(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        f_in = width
        for stage, f_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(3):
                blocks.append(_Block(f_in, f_out, downsample=(stage > 0 and b == 0),
                                     layers=layers))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = layers.linear(f_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))


VGG_PLANS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512],
}


class VGG(nn.Module):
    """open_lth ``cifar_vgg_16/19``: conv(+bias)-BN-ReLU, max-pools, average pool, fc 512-10.

    open_lth's AvgPool2d(2) sees 2x2 maps on 32x32 inputs; the global average used here is the
    same there and also fits other input sizes (1x1 maps on 28x28 MNIST). ``width`` multiplies
    every channel count (at least 1)."""

    output_layer = "fc.weight"

    def __init__(self, plan: Sequence[int | str], num_classes: int = 10, in_channels: int = 3,
                 layers: LayerType | None = None, width: float = 1.0) -> None:
        super().__init__()
        layers = layers or layer_type("dense")
        width = check_float("width", width, low=0.0, low_open=True)
        modules: list[nn.Module] = []
        channels = in_channels
        for item in plan:
            if item == "M":
                modules.append(nn.MaxPool2d(2))
            else:
                out = max(1, round(int(item) * width))
                modules += [layers.conv(channels, out, 3, padding=1),
                            nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*modules)
        self.fc = layers.linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(x.flatten(1))


def _dropout(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or the identity for p = 0 (so models without dropout are unchanged)."""
    p = check_float("dropout", p, low=0.0, high=1.0, high_open=True)
    return nn.Dropout(p) if p > 0 else nn.Identity()


# --- registry of builders: (layers, num_classes, input_shape, **options) -> model -------------

def _shape(input_shape: Sequence[int] | None, default: tuple[int, int, int]) -> tuple[int, ...]:
    shape = tuple(default if input_shape is None else input_shape)
    if len(shape) != 3 or any(int(v) < 1 for v in shape):
        raise ValueError(f"input_shape must be (channels, height, width) of positive sizes, got "
                         f"{input_shape!r}")
    return tuple(int(v) for v in shape)


@MODELS.register("student")
def _student(*, layers: LayerType, num_classes: int, input_shape: Sequence[int] | None,
             d: int | None = None, K: int | None = None) -> nn.Module:  # noqa: N803
    if d is None or K is None:
        raise ValueError(f"the student needs d and K (got d={d!r}, K={K!r})")
    return Student(d, K, layers=layers)


@MODELS.register("mlp")
def _mlp(*, layers: LayerType, num_classes: int, input_shape: Sequence[int] | None,
         hidden: Sequence[int] = (300, 100), bias: bool = True) -> nn.Module:
    return MLP(math.prod(_shape(input_shape, MNIST_SHAPE)), tuple(hidden), num_classes, bias=bias,
               layers=layers)


@MODELS.register("lenet_300_100")
def _lenet_300_100(*, layers: LayerType, num_classes: int, input_shape: Sequence[int] | None,
                   dropout: float = 0.0) -> nn.Module:
    return Lenet300100(num_classes, math.prod(_shape(input_shape, MNIST_SHAPE)), layers=layers,
                       dropout=dropout)


@MODELS.register("lenet5")
def _lenet5(*, layers: LayerType, num_classes: int, input_shape: Sequence[int] | None
            ) -> nn.Module:
    shape = _shape(input_shape, MNIST_SHAPE)
    if shape[1:] != (28, 28):
        raise ValueError(f"lenet5 takes 28x28 images, got input_shape {shape}")
    return Lenet5(num_classes, shape[0], layers=layers)


def _conv_builder(plan_name: str) -> Callable[..., nn.Module]:
    def build(*, layers: LayerType, num_classes: int, input_shape: Sequence[int] | None,
              width: float = 1.0, bias: bool = True, dropout: float = 0.0) -> nn.Module:
        c, h, w = _shape(input_shape, CIFAR_SHAPE)
        if h != w:
            raise ValueError(f"{plan_name} takes square images, got input_shape {(c, h, w)}")
        return ConvNet(CONV_PLANS[plan_name], num_classes, c, h, width=width, bias=bias,
                       layers=layers, dropout=dropout)
    return build


for _name in CONV_PLANS:
    MODELS.add(_name, _conv_builder(_name))


@MODELS.register("resnet20")
def _resnet20(*, layers: LayerType, num_classes: int, input_shape: Sequence[int] | None,
              width: int = 16) -> nn.Module:
    return ResNet20(num_classes, width, _shape(input_shape, CIFAR_SHAPE)[0], layers=layers)


def _vgg_builder(plan_name: str) -> Callable[..., nn.Module]:
    def build(*, layers: LayerType, num_classes: int, input_shape: Sequence[int] | None,
              width: float = 1.0) -> nn.Module:
        return VGG(VGG_PLANS[plan_name], num_classes, _shape(input_shape, CIFAR_SHAPE)[0],
                   layers=layers, width=width)
    return build


for _name in VGG_PLANS:
    MODELS.add(_name, _vgg_builder(_name))


# --- initializations: (weight, generator, density) -> None, in place --------------------------

def _fan_in(weight: torch.Tensor) -> int:
    return weight[0].numel()


@INITS.register("glorot")
def _glorot(weight: torch.Tensor, g: torch.Generator, density: float) -> None:
    nn.init.xavier_normal_(weight, generator=g)


@INITS.register("kaiming")
def _kaiming(weight: torch.Tensor, g: torch.Generator, density: float) -> None:
    nn.init.kaiming_normal_(weight, generator=g)


INITS.add("kaiming_normal", _kaiming)


@INITS.register("signed_constant")
def _signed_constant(weight: torch.Tensor, g: torch.Generator, density: float) -> None:
    sign = torch.randint(0, 2, weight.shape, generator=g).to(weight) * 2 - 1
    weight.copy_(sign * math.sqrt(2.0 / _fan_in(weight)))


@INITS.register("scaled_kaiming_normal")
def _scaled_kaiming(weight: torch.Tensor, g: torch.Generator, density: float) -> None:
    weight.normal_(0.0, math.sqrt(2.0 / (density * _fan_in(weight))), generator=g)


@INITS.register("scaled_signed_constant")
def _scaled_signed_constant(weight: torch.Tensor, g: torch.Generator, density: float) -> None:
    sign = torch.randint(0, 2, weight.shape, generator=g).to(weight) * 2 - 1
    weight.copy_(sign * math.sqrt(2.0 / (density * _fan_in(weight))))


def initialize(model: nn.Module, init: str, seed: int) -> nn.Module:
    """Draw every weight of ``model`` in place (see the module docstring); returns the model."""
    draw = INITS[init]
    g = generator(seed)
    g_scores = generator(derive_seed(seed, "scores"))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                draw(module.weight, g, float(getattr(module, "density", 1.0)))
                if module.bias is not None:
                    module.bias.zero_()
                if isinstance(module, SCORE_LAYERS):
                    bound = 1.0 / math.sqrt(_fan_in(module.scores))
                    module.scores.uniform_(-bound, bound, generator=g_scores)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.0, 1.0, generator=g)
                module.bias.zero_()
    return model


def build_model(name: str, *, seed: int, init: str = "glorot", num_classes: int = 10,
                input_shape: Sequence[int] | None = None, layers: str | LayerType = "dense",
                **options: Any) -> nn.Module:
    """A freshly initialized model by name (``MODELS``), on the CPU.

    ``layers`` is a ``LayerType`` or the name of one (``LAYER_TYPES``); ``density`` among the
    options goes to the layer type (score layers). The other ``options`` go to the builder:
    ``d`` and ``K`` for the student, ``hidden`` and ``bias`` for ``mlp``, ``width`` and ``bias``
    for the conv nets. ``input_shape`` is (channels, height, width), default MNIST's for the MLPs
    and Lenet-5 and CIFAR's for the conv nets, ResNet and VGG.
    """
    builder = MODELS[name]
    num_classes = check_int("num_classes", num_classes, minimum=1)
    check_int("seed", seed, minimum=0)
    if not isinstance(layers, LayerType):
        layer_options = {"density": options.pop("density")} if "density" in options else {}
        layers = layer_type(layers, **layer_options)
    allowed = [p for p in inspect.signature(builder).parameters
               if p not in ("layers", "num_classes", "input_shape")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} takes no option {unknown}; its options: "
                         f"{allowed or 'none'}")
    model = builder(layers=layers, num_classes=num_classes, input_shape=input_shape, **options)
    return initialize(model, init, seed)


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the ``.weight`` of every Linear and Conv2d (biases and BatchNorm are never pruned)."""
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d))]


def is_conv_weight(model: nn.Module, name: str) -> bool:
    """Whether the prunable tensor ``name`` belongs to a convolution."""
    module_name = name.rsplit(".", 1)[0] if "." in name else ""
    return isinstance(model.get_submodule(module_name), nn.Conv2d)

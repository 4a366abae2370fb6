"""IMP tickets for the Sakamoto & Sato (NeurIPS 2022) experiments: one run of a cell's settings,
with every level's mask and trained weights kept for measurements on the tickets.

The paper's IMP (its App. A, Alg. 1; our spec sec. 1): SGD with momentum 0.9 and weight decay
1e-4, global magnitude pruning of ``fraction`` of the remaining weights per level with the output
layer left unpruned, rewinding to the initialization (k = 0), Kaiming-normal initialization; the
small learning rate (0.01) finds winning tickets, the large one (0.1) is the contrast. A cell may
add a training option of ``deep_lottery.training``: a step rule (``sam``, ``asam``, ``nvrm``), a
kept-weight penalty (``l2_norm``, ``l2_init``) and symmetric label noise on the training set (the
same relabelled set for every cell: noise seed 0, spec sec. 0).

Sizes: full = ResNet-20 (and VGG-16, ``FULL_VGG16``) on CIFAR-10 and CIFAR-100, 30,000 iterations
of batch 128 with the learning rate x0.1 at 20,000 and 25,000, flip-and-crop augmentation, 20% per
level; quick = Lenet-300-100 on
the re-split MNIST test split on the CPU, 200 iterations of batch 60 per level, 44% per level so
that 4 levels reach about 90% sparsity (the paper's tickets are 90% and 95% sparse).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..frankle2019.imp_runs import IMP_PARAMS, check_sizes
from ..mnist_imp import missing_mnist
from ..registry import Param

MODELS = ("lenet_300_100", "mlp", "lenet5", "conv2", "conv4", "resnet20", "vgg16")
STEP_RULES = ("plain", "sam", "asam", "nvrm")
REGULARIZERS = ("none", "l2_norm", "l2_init")
MOMENTUM, WEIGHT_DECAY = 0.9, 1e-4
SMALL_LR, LARGE_LR = 0.01, 0.1
"""The paper's winning-ticket (small) and contrast (large) learning rates (ResNet-20)."""
OUTPUT_LAYER = "fc.weight"
"""Left unpruned (the paper's global pruning with ``fc.weight`` kept; every model of ``MODELS``
names its output layer ``fc``)."""

TICKET_PARAMS: dict[str, Param] = {
    **IMP_PARAMS,
    "model": Param("str", choices=MODELS),
    "width": Param("float", low=0.0, low_open=True),
    "lr": Param("float", low=0.0, low_open=True),
    "fraction": Param("float", low=0.0, high=1.0, low_open=True, high_open=True),
    "batch_size": Param("int", low=1),
    "label_noise": Param("float", low=0.0, high=1.0, high_open=True),
    "step_rule": Param("str", choices=STEP_RULES),
    "rho": Param("float", low=0.0),
    "variability": Param("float", low=0.0),
    "regularizer": Param("str", choices=REGULARIZERS),
    "regularization": Param("float", low=0.0),
    "augment": Param("bool"),
    "dataset": Param("str", choices=("mnist", "cifar10", "cifar100")),
}
"""Rules of the ticket parameters: ``fraction`` pruned per level (global), ``lr`` of SGD,
``label_noise`` the relabelled fraction of the training set, ``rho`` SAM's radius, ``variability``
NVRM's noise scale b, ``regularization`` the coefficient lambda of Eq. 1."""

TICKET_KEYS = tuple(TICKET_PARAMS) + ("dataset",)

QUICK: dict[str, list[Any]] = {
    "dataset": ["mnist"], "mnist_files": ["test"], "N": [3000], "n_val": [500], "n_test": [2000],
    "model": ["lenet_300_100"], "width": [1.0], "levels": [4], "fraction": [0.44],
    "iterations": [200], "eval_every": [50], "batch_size": [60], "lr": [SMALL_LR],
    "label_noise": [0.0], "step_rule": ["plain"], "rho": [0.05], "variability": [0.01],
    "regularizer": ["none"], "regularization": [0.0], "augment": [False]}
"""The quick ticket settings (one grid row of values; experiments override entries)."""

FULL: dict[str, list[Any]] = {
    "dataset": ["cifar10"], "mnist_files": ["train"], "N": [45_000], "n_val": [5000],
    "n_test": [0], "model": ["resnet20"], "width": [16.0], "levels": [10], "fraction": [0.2],
    "iterations": [30_000], "eval_every": [1000], "batch_size": [128], "lr": [SMALL_LR],
    "label_noise": [0.0], "step_rule": ["plain"], "rho": [0.05], "variability": [0.01],
    "regularizer": ["none"], "regularization": [0.0], "augment": [True]}
"""The paper's ResNet-20 setting (lth-pacbayes README; spec sec. 1): 10 levels of 20% give 89%
sparsity (the paper's 90%)."""

FULL_VGG16: dict[str, list[Any]] = {
    **FULL, "model": ["vgg16"], "width": [1.0], "levels": [20], "iterations": [56_250]}
"""VGG-16 (not in [LP]; spec sec. 1 [I]: open_lth's cifar_vgg_16, 160 epochs of batch 128 on 45k
images = 56,250 iterations, the same SGD and pruning): 20 levels of 20% give 98.8% sparsity (the
paper's VGG-16 tickets are 99% sparse)."""

FULL_BASES: tuple[dict[str, list[Any]], ...] = tuple(
    {**base, "dataset": [name]} for name in ("cifar10", "cifar100") for base in (FULL, FULL_VGG16))
"""The paper's four full-size settings: ResNet-20 and VGG-16 on CIFAR-10 and CIFAR-100."""


def each_full(build: Callable[[dict[str, list[Any]]], Any]) -> list[dict[str, list[Any]]]:
    """The grids ``build(base)`` gives (one grid or a list) for every base of ``FULL_BASES``."""
    out: list[dict[str, list[Any]]] = []
    for base in FULL_BASES:
        made = build(base)
        out.extend(made if isinstance(made, list) else [made])
    return out


def missing_data(size: str) -> str | None:
    """What the size lacks: the MNIST test split (quick) or CIFAR-10 and CIFAR-100 (full)."""
    if size == "quick":
        return missing_mnist(size)
    from deep_lottery.data import missing_cifar_files

    return missing_cifar_files("cifar10") or missing_cifar_files("cifar100")


def grid(base: Mapping[str, list[Any]], **changes: list[Any]) -> dict[str, list[Any]]:
    """``base`` with some entries replaced (each a list of values)."""
    unknown = set(changes) - set(base)
    if unknown:
        raise ValueError(f"not ticket parameters: {sorted(unknown)}")
    return {**base, **changes}


def check(cell: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The data sizes must fit their split; ``width`` only for the nets that have one."""
    yield from check_sizes(cell)


def model_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """Builder options of the cell's model (``width`` for the conv nets, ResNet and VGG)."""
    if params["model"] in ("conv2", "conv4", "vgg16"):
        return {"width": float(params["width"])}
    if params["model"] == "resnet20":
        return {"width": int(params["width"])}
    return {}


def train_config(params: Mapping[str, Any], seed: int, **changes: Any) -> Any:
    """SGD (momentum 0.9, weight decay 1e-4 unless a penalty of Eq. 1 replaces it) with the
    cell's step rule and penalty; the full size's milestones at 2/3 and 5/6 of the run."""
    from deep_lottery.training import TrainConfig

    iterations = int(params["iterations"])
    milestones = (2 * iterations // 3, 5 * iterations // 6) if params["dataset"] != "mnist" \
        else ()
    penalty = params["regularizer"] != "none"
    cfg = TrainConfig(iterations=iterations, batch_size=int(params["batch_size"]), optimizer="sgd",
                      lr=float(params["lr"]), momentum=MOMENTUM,
                      weight_decay=0.0 if penalty else WEIGHT_DECAY, milestones=milestones,
                      eval_every=int(params["eval_every"]), augment=bool(params["augment"]),
                      data_order_seed=seed, eval_batch_size=250 if params["dataset"] == "mnist"
                      else 2000, step_rule=str(params["step_rule"]), rho=float(params["rho"]),
                      variability=float(params["variability"]),
                      regularizer=str(params["regularizer"]),
                      regularization=float(params["regularization"]))
    return dataclasses.replace(cfg, **changes) if changes else cfg


def prune_config(criterion: str = "large_final", fraction: float = 0.2) -> Any:
    """Global pruning of ``fraction`` of the remaining weights, output layer unpruned."""
    from deep_lottery.pruning import PruneConfig

    return PruneConfig(fraction=fraction, scope="global", ignore=(OUTPUT_LAYER,),
                       criterion=criterion)


def splits_for(params: Mapping[str, Any]) -> Any:
    """The cell's splits with its label noise (training set only, noise seed 0)."""
    from deep_lottery.data import vision_splits

    noise = float(params["label_noise"])
    if params["dataset"] == "mnist":
        return vision_splits("mnist", data_dir=params.get("data_dir"), n_train=int(params["N"]),
                             n_val=int(params["n_val"]), n_test=int(params["n_test"]) or None,
                             split_seed=0, test_split_only=params["mnist_files"] == "test",
                             label_noise=noise, noise_seed=0)
    return vision_splits(str(params["dataset"]), data_dir=params.get("data_dir"),
                         n_train=int(params["N"]), n_val=int(params["n_val"]),
                         n_test=int(params["n_test"]) or None, split_seed=0, label_noise=noise,
                         noise_seed=0)


@dataclass
class Tickets:
    """One IMP run: records per level, masks and trained weights per level, the rewind point
    (the initialization), the splits, a model factory and the training configuration."""

    records: list[dict[str, Any]]
    states: Any
    splits: Any
    make_model: Any
    train: Any
    device: Any

    def level(self, level: int) -> tuple[Any, dict[str, Any]]:
        """(mask, trained state) of IMP level ``level``."""
        return self.states.levels[("imp", level)]

    @property
    def levels(self) -> list[int]:
        return sorted(lv for b, lv in self.states.levels if b == "imp")

    def trained_model(self, level: int) -> Any:
        """IMP level ``level``'s trained ticket, on the run's device."""
        mask, state = self.level(level)
        model = self.make_model(0)
        model.load_state_dict(state)
        return model.to(self.device)

    def record(self, level: int) -> dict[str, Any]:
        return next(r for r in self.records if r["branch"] == "imp" and r["level"] == level)


def run_tickets(params: Mapping[str, Any], seed: int, *, criterion: str = "large_final",
                branches: tuple[str, ...] = ("imp",)) -> Tickets:
    """IMP with the cell's settings (levels cached under ``$LOTTERY_LAB_IMP_CACHE`` when set)."""
    from deep_lottery.device import choose_device
    from deep_lottery.imp import IMPConfig, LevelStates, cache_directory, run_imp
    from deep_lottery.models import build_model

    seed = int(seed) % (2**62)
    splits = splits_for(params)
    shape = tuple(int(v) for v in splits.train.x.shape[1:])
    options = model_options(params)
    train = train_config(params, seed)
    config = IMPConfig(levels=int(params["levels"]), train=train,
                       prune=prune_config(criterion, float(params["fraction"])), seed=seed)

    def make_model(s: int) -> Any:
        return build_model(str(params["model"]), seed=s, init="kaiming_normal",
                           input_shape=shape, num_classes=splits.num_classes, **options)

    device = choose_device(str(params.get("device", "auto")))
    states = LevelStates()
    extra = {k: params[k] for k in TICKET_KEYS if k in params}
    records = run_imp(make_model, splits, config, task="classification", branches=branches,
                      device=device, progress=False, states=states,
                      out_dir=cache_directory(config, extra={**extra, "criterion": criterion}))
    return Tickets(records, states, splits, make_model, train, device)


def level_lists(tickets: Tickets, fields: tuple[str, ...]) -> dict[str, list[float]]:
    """``{"level": [...], field: [value per IMP level]}`` from the run's records."""
    rows = sorted((r for r in tickets.records if r["branch"] == "imp"), key=lambda r: r["level"])
    out: dict[str, list[float]] = {"level": [int(r["level"]) for r in rows]}
    for f in fields:
        out[f] = [float(r.get(f, math.nan)) for r in rows]
    return out


ROW_FIELDS = ("density", "test_metric_end", "test_metric_at_stop", "train_metric_end",
              "distance_from_start", "weight_norm")
"""Per-level fields every ticket row holds (``imp_<field>`` lists, ``deep_lottery.tables``)."""


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (a diverged run's NaN) replaced by None (saved rows
    hold finite numbers only; None reads back as NaN)."""
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def ticket_row(tickets: Tickets, fields: tuple[str, ...] = ROW_FIELDS) -> dict[str, Any]:
    """One row of per-level lists (``imp_level``, ``imp_<field>``) of the ``fields`` every level
    recorded, plus throughput and device."""
    from deep_lottery.tables import records_to_row

    present = tuple(f for f in fields if all(f in r for r in tickets.records))
    row: dict[str, Any] = {k: finite_or_none(v)
                           for k, v in records_to_row(tickets.records, present).items()}
    speeds = [float(r["images_per_second"]) for r in tickets.records
              if math.isfinite(float(r.get("images_per_second", math.nan)))]
    row["images_per_second"] = sum(speeds) / len(speeds) if speeds else math.nan
    row["device"] = str(tickets.device)
    return row


def level_frame(runs: Any, keys: tuple[str, ...], fields: tuple[str, ...],
                prefix: str = "imp") -> Any:
    """One row per (run, level) of the ``<prefix>_<field>`` lists: ``keys``, ``level`` and
    ``fields`` (NaN where a run lacks a field, e.g. the noisy-label accuracies of a clean run;
    failed rows are skipped)."""
    import pandas as pd

    keys = tuple(k for k in keys if k in runs.columns)
    out = []
    if f"{prefix}_level" in runs.columns:
        for _, run in runs.iterrows():
            levels = run[f"{prefix}_level"]
            if not hasattr(levels, "__len__"):
                continue
            for i, level in enumerate(levels):
                item = {k: run[k] for k in keys}
                item["level"] = int(level)
                for f in fields:
                    values = run.get(f"{prefix}_{f}")
                    value = values[i] if hasattr(values, "__len__") and i < len(values) else None
                    item[f] = math.nan if value is None else float(value)
                out.append(item)
    return pd.DataFrame(out, columns=[*keys, "level", *fields])


def final_level(frame: Any, keys: tuple[str, ...]) -> Any:
    """The rows of each run's last (sparsest) level (runs told apart by ``keys``)."""
    keys = tuple(k for k in keys if k in frame.columns)
    if not len(frame) or not keys:
        return frame
    last = frame.groupby(list(keys), dropna=False)["level"].transform("max")
    return frame[frame["level"] == last]

"""Iterative magnitude pruning with rewinding, and its controls (Frankle & Carbin 2019; Frankle
et al. 2020; open_lth), written as a higher-order function of ``make_model`` (as Google's code is).

Level 0 trains the dense network from ``theta_0`` and records ``theta_k``, its weights after
``rewind_iteration = k`` steps (k = 0: reset to the initialization). Level L >= 1 prunes the
final weights of level L-1 (``pruning.prune``; density ``(1-f)^L`` per layer, 0.8^L at 20%), sets
the surviving weights to ``theta_k * m_L`` and trains from iteration k to the same end step with
the data order and learning-rate schedule of iteration k.

Controls (``BRANCHES``; add one with ``@BRANCHES.register(name)``: a function of the run's
``BranchContext`` and the level that returns the level's mask and starting model), each for
L = 1..levels, sharing the IMP run's level 0:

* ``reinit``: IMP's mask m_L with a fresh initialization from the same initializer
  (``randomly_reinitialize``); it trains from the same iteration as the level.
* ``random_prune``: a uniformly random mask with m_L's per-layer (layer-wise) or total (global)
  count, rewound weights (``randomly_prune``).
* ``one_shot``: prune level 0's trained weights once, straight to IMP's level-L kept counts (per
  layer, or in total for global pruning), then rewind and train; compare at equal density.

Each level writes ``<out_dir>/<branch>/level_<L>/{record.json, mask.pth, final.pth}`` when
``out_dir`` is given; a level whose record exists is loaded instead of trained, so an interrupted
run resumes. ``hparams.json`` in ``out_dir`` holds the configuration and the code fingerprint,
and a mismatch is refused (``run_directory`` names a folder by their hash, as open_lth does;
``cache_directory`` does so under ``$LOTTERY_LAB_IMP_CACHE``, which the experiments use).

A cached level is reused only if the same code would compute it (the experiment engine's rule
for saved rows): the folder name is ``lottery_common.stable_hash`` of the configuration, the
``extra`` settings and ``code_fingerprint()``, the digest of the syntax trees (docstrings and
comments ignored) of this module, ``models`` and every module of ``deep_lottery``, ``sparse_teacher`` and
``lottery_common`` they import. Editing that code moves the cache to a new folder; the old one is
never read again (delete it to reclaim the space). Seeds of the random streams (pruning ties,
reinitialization, random masks) come from ``lottery_common.derive_seed``, as in the engine.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lottery_common import Registry, check_int, derive_seed, stable_hash
from lottery_common.fingerprint import module_closure, modules_digest

from .data import Splits
from .device import choose_device, generator
from .masks import Mask
from .pruning import PruneConfig, keep_scores, prune, prune_like, shuffle_mask
from .training import TrainConfig, train

# named streams: ``derive_seed(seed, NAME, level[, 1])`` (strings: never equal to another stream)
_STREAM_PRUNE, _STREAM_REINIT, _STREAM_SHUFFLE, _STREAM_ONESHOT = (
    "imp/prune", "imp/reinit", "imp/random_prune", "imp/one_shot")

CODE_MODULES = ("deep_lottery.imp", "deep_lottery.models")
"""The modules whose code (with what they import from our packages)
computes a cached level: ``code_fingerprint`` hashes them."""


@dataclass(frozen=True)
class IMPConfig:
    """One IMP run: ``levels`` pruning levels after the dense level 0."""

    levels: int
    train: TrainConfig
    prune: PruneConfig = dataclasses.field(default_factory=PruneConfig)
    rewind_iteration: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("levels", self.levels, minimum=0)
        check_int("rewind_iteration", self.rewind_iteration, minimum=0,
                  maximum=self.train.iterations - 1)
        check_int("seed", self.seed, minimum=0)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@functools.lru_cache(maxsize=1)
def _code_modules() -> dict[str, Path]:
    return module_closure(CODE_MODULES, follow=("deep_lottery", "sparse_teacher", "lottery_common"))


def code_fingerprint() -> str:
    """``stable_hash`` digest of the code that computes a level (``CODE_MODULES`` and what they
    import from our packages; docstrings and comments ignored)."""
    return modules_digest(_code_modules())


def _hparams(config: IMPConfig, extra: dict[str, Any] | None) -> dict[str, Any]:
    return {"config": config.to_dict(), "extra": dict(extra or {}), "code": code_fingerprint()}


def config_hash(config: IMPConfig, extra: dict[str, Any] | None = None) -> str:
    """``stable_hash`` of the configuration, the ``extra`` settings and ``code_fingerprint()``."""
    return stable_hash(_hparams(config, extra))


def run_directory(root: str | os.PathLike, config: IMPConfig,
                  extra: dict[str, Any] | None = None) -> Path:
    """``root/imp_<hash>`` (open_lth's ``lottery_<hash>`` naming), ``hash = config_hash(...)``."""
    return Path(root) / f"imp_{config_hash(config, extra)}"


CACHE_ENV = "LOTTERY_LAB_IMP_CACHE"


def cache_directory(config: IMPConfig, extra: dict[str, Any] | None = None) -> Path | None:
    """``run_directory($LOTTERY_LAB_IMP_CACHE, config, extra)`` when that variable is set, else
    None. Experiments pass it as ``out_dir``: the folder is named by the content hash of every
    setting and of the code, so a long cell killed mid-run resumes at its last finished level,
    the results are the same as without the cache, and levels computed by older code are never
    reused."""
    root = os.environ.get(CACHE_ENV)
    return run_directory(root, config, extra) if root else None


def _weights(state: dict[str, torch.Tensor], names: Sequence[str], device: torch.device
             ) -> dict[str, torch.Tensor]:
    """The prunable tensors of a CPU state dict, moved to ``device`` (pruning runs there)."""
    return {n: state[n].to(device) for n in names}


def _masked_start(make_model: Callable[[int], nn.Module], seed: int,
                  state: dict[str, torch.Tensor] | None, mask: Mask) -> nn.Module:
    model = make_model(seed)
    if state is not None:
        model.load_state_dict(state)
    mask.apply(model)
    return model


class _Store:
    """The on-disk layout of one run (or nothing when ``out_dir`` is None)."""

    def __init__(self, out_dir: str | os.PathLike | None, config: IMPConfig,
                 extra: dict[str, Any]) -> None:
        self.root = Path(out_dir) if out_dir is not None else None
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        hp = _hparams(config, extra)
        path = self.root / "hparams.json"
        if path.exists():
            if json.loads(path.read_text()) != json.loads(json.dumps(hp)):
                raise ValueError(f"{self.root} holds a run with other hyperparameters or computed "
                                 f"by older code (see {path}); use another out_dir or "
                                 f"run_directory(), or delete it to recompute")
        else:
            path.write_text(json.dumps(hp, indent=1, sort_keys=True))

    def level_dir(self, branch: str, level: int) -> Path | None:
        return None if self.root is None else self.root / branch / f"level_{level}"

    def load(self, branch: str, level: int
             ) -> tuple[dict[str, Any], Mask, dict[str, torch.Tensor]] | None:
        d = self.level_dir(branch, level)
        if d is None or not (d / "record.json").exists():
            return None
        state = torch.load(d / "final.pth", map_location="cpu", weights_only=True)
        return json.loads((d / "record.json").read_text()), Mask.load(d / "mask.pth"), state

    def save(self, branch: str, level: int, record: dict[str, Any], mask: Mask,
             state: dict[str, torch.Tensor]) -> None:
        d = self.level_dir(branch, level)
        if d is None:
            return
        d.mkdir(parents=True, exist_ok=True)
        mask.save(d / "mask.pth")
        torch.save(state, d / "final.pth")
        tmp = d / "record.json.tmp"  # written last and renamed: a record means a complete level
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(d / "record.json")

    def tensor(self, name: str) -> dict[str, torch.Tensor] | None:
        if self.root is None or not (self.root / name).exists():
            return None
        return torch.load(self.root / name, map_location="cpu", weights_only=True)

    def save_tensor(self, name: str, state: dict[str, torch.Tensor]) -> None:
        if self.root is not None:
            torch.save(state, self.root / name)


@dataclass
class BranchContext:
    """What a control branch may use: the IMP run's masks per level, level 0's trained weights,
    the rewind point and the means to build and place models."""

    make_model: Callable[[int], nn.Module]
    config: IMPConfig
    masks: dict[int, Mask]
    dense_final: dict[str, torch.Tensor]
    rewind_state: dict[str, torch.Tensor]
    names: list[str]
    device: torch.device

    def masked_start(self, seed: int, state: dict[str, torch.Tensor] | None, mask: Mask
                     ) -> nn.Module:
        """A model from ``make_model(seed)``, loaded with ``state`` (if any), under ``mask``."""
        return _masked_start(self.make_model, seed, state, mask)

    def weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The prunable tensors of ``state`` on the device."""
        return _weights(state, self.names, self.device)


Branch = Callable[[BranchContext, int], tuple[Mask, nn.Module]]
BRANCHES: Registry[Branch] = Registry("IMP branch")
"""Control branches: ``(context, level) -> (mask, starting model)``; "imp" itself is not one."""


@BRANCHES.register("reinit")
def _reinit(ctx: BranchContext, level: int) -> tuple[Mask, nn.Module]:
    """IMP's mask with a fresh initialization (Frankle & Carbin's random reinitialization)."""
    mask = ctx.masks[level]
    return mask, ctx.masked_start(derive_seed(ctx.config.seed, _STREAM_REINIT, level), None, mask)


@BRANCHES.register("random_prune")
def _random_prune(ctx: BranchContext, level: int) -> tuple[Mask, nn.Module]:
    """A random mask with IMP's per-layer (or total) count, rewound weights."""
    prune_cfg = ctx.config.prune
    mask = shuffle_mask(ctx.masks[level].to(ctx.device), prune_cfg.scope,
                        generator(derive_seed(ctx.config.seed, _STREAM_SHUFFLE, level)),
                        ignore=prune_cfg.ignore).cpu()
    return mask, ctx.masked_start(ctx.config.seed, ctx.rewind_state, mask)


@BRANCHES.register("one_shot")
def _one_shot(ctx: BranchContext, level: int) -> tuple[Mask, nn.Module]:
    """Level 0's trained weights pruned once to IMP's level-L counts, then rewound."""
    prune_cfg, seed = ctx.config.prune, ctx.config.seed
    scores = keep_scores(prune_cfg.criterion, ctx.weights(ctx.dense_final),
                         ctx.weights(ctx.rewind_state), ctx.names,
                         generator(derive_seed(seed, _STREAM_ONESHOT, level)))
    mask = prune_like(ctx.masks[0].to(ctx.device), scores, ctx.masks[level].to(ctx.device),
                      prune_cfg.scope, generator(derive_seed(seed, _STREAM_ONESHOT, level, 1)),
                      ignore=prune_cfg.ignore).cpu()
    return mask, ctx.masked_start(seed, ctx.rewind_state, mask)


@dataclass
class LevelStates:
    """What ``run_imp(states=...)`` fills in: the rewind point and, per (branch, level), the
    level's mask and final weights (CPU tensors), for measurements on the trained tickets."""

    rewind: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    levels: dict[tuple[str, int], tuple[Mask, dict[str, torch.Tensor]]] = dataclasses.field(
        default_factory=dict)


def run_imp(make_model: Callable[[int], nn.Module], splits: Splits, config: IMPConfig, *,
            task: str, device: str | torch.device = "auto", branches: Sequence[str] = ("imp",),
            out_dir: str | os.PathLike | None = None, progress: bool = True,
            extra: dict[str, Any] | None = None, checkpoint_every: int = 1000,
            states: LevelStates | None = None) -> list[dict[str, Any]]:
    """Run IMP (and the control ``branches``) and return one record per (branch, level).

    ``make_model(seed)`` returns a freshly initialized model on the CPU. Records hold ``branch``,
    ``level``, ``density``, ``num_kept``, ``early_stop_iteration``, ``val_loss_min``,
    ``test_{loss,metric}_at_stop``, ``test_{loss,metric}_end``, ``train_{loss,metric}_end``,
    ``train_metric_at_stop``, ``images_per_second``, ``device``, ``start_iteration`` and
    ``history`` (the evaluations of the level: iteration, validation and, with
    ``TrainConfig.test_history``, test loss and metric). ``extra`` (e.g. the data description)
    is stored with the hyperparameters. With ``out_dir``, each level also checkpoints every
    ``checkpoint_every`` iterations (0: never) in its folder, so a killed run resumes inside the
    level with the weights an uninterrupted run would have. ``states`` (a ``LevelStates``), when
    given, receives the rewind point and every level's mask and final weights.
    """
    unknown = [b for b in branches if b != "imp" and b not in BRANCHES]
    if unknown or "imp" not in branches:
        raise ValueError(f"branches must include 'imp' and be drawn from "
                         f"{('imp', *BRANCHES.names())}, got {list(branches)}")
    device = choose_device(device) if isinstance(device, str) else device
    extra = dict(extra or {})
    store = _Store(out_dir, config, extra)
    splits = splits.to(device)
    k = config.rewind_iteration

    template = make_model(config.seed)
    names = Mask.ones_like(template).names()
    init_state = store.tensor("init.pth")
    if init_state is None:
        init_state = {n: v.detach().clone() for n, v in template.state_dict().items()}
        store.save_tensor("init.pth", init_state)

    records: list[dict[str, Any]] = []
    bar = tqdm(total=(config.levels + 1) + config.levels * (len(branches) - 1),
               desc="IMP levels", disable=not progress)

    def run_level(branch: str, level: int, mask: Mask, model: nn.Module, start: int,
                  capture: int | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                                       dict[str, torch.Tensor] | None]:
        level_dir = store.level_dir(branch, level)
        result = train(model, mask, splits, config.train, task=task, device=device,
                       start_iteration=start, capture_iteration=capture, progress=progress,
                       desc=f"{branch} L{level}",
                       checkpoint=None if level_dir is None else level_dir / "checkpoint.pth",
                       checkpoint_every=checkpoint_every)
        record = {"branch": branch, "level": level, "density": mask.density,
                  "num_kept": mask.num_kept, "start_iteration": start, "device": str(device),
                  **result.summary(), "history": result.history}
        store.save(branch, level, record, mask.cpu(), result.final_state)
        return record, result.final_state, result.captured_state

    # level 0 (dense), shared by every branch
    loaded = store.load("imp", 0)
    rewind_state = store.tensor("rewind.pth")
    if loaded is not None and rewind_state is not None:
        record, mask, final = loaded
    else:
        mask = Mask.ones_like(template)
        record, final, captured = run_level("imp", 0, mask, make_model(config.seed), 0,
                                            capture=k if k > 0 else None)
        rewind_state = captured if k > 0 else init_state
        store.save_tensor("rewind.pth", rewind_state)
    records.append(record)
    bar.update()
    dense_final = final
    masks = {0: mask}
    if states is not None:
        states.rewind = rewind_state
        states.levels[("imp", 0)] = (mask.cpu(), final)

    # IMP levels
    for level in range(1, config.levels + 1):
        loaded = store.load("imp", level)
        if loaded is not None:
            record, mask, final = loaded
        else:
            scores = keep_scores(config.prune.criterion, _weights(final, names, device),
                                 _weights(rewind_state, names, device), names,
                                 generator(derive_seed(config.seed, _STREAM_PRUNE, level)))
            mask = prune(template, masks[level - 1].to(device), scores, config.prune,
                         generator(derive_seed(config.seed, _STREAM_PRUNE, level, 1))).cpu()
            model = _masked_start(make_model, config.seed, rewind_state, mask)
            record, final, _ = run_level("imp", level, mask, model, k)
        masks[level] = mask
        records.append(record)
        if states is not None:
            states.levels[("imp", level)] = (mask.cpu(), final)
        bar.update()

    # controls
    context = BranchContext(make_model, config, masks, dense_final, rewind_state, names, device)
    for branch in branches:
        if branch == "imp":
            continue
        for level in range(1, config.levels + 1):
            loaded = store.load(branch, level)
            if loaded is not None:
                record, mask, final = loaded
            else:
                mask, model = BRANCHES[branch](context, level)
                record, final, _ = run_level(branch, level, mask, model, k)
            records.append(record)
            if states is not None:
                states.levels[(branch, level)] = (mask.cpu(), final)
            bar.update()
    bar.close()
    return records

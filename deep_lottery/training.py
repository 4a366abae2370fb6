"""The masked training loop (one IMP level) with early-stopping bookkeeping.

Per step: forward (bfloat16 autocast on CUDA when ``amp``), backward, gradients multiplied by the
mask, optimizer step, weights multiplied by the mask (``masks`` module docstring). The data order
is a function of the iteration alone: epoch ``e`` uses ``randperm(N)`` from a generator seeded
with ``lottery_common.derive_seed(data_order_seed, "data_order", e)`` (the augmentation draws use
the stream ``"augment"``), so a run resumed or rewound to iteration k sees the same batches as an
uninterrupted one. The learning rate at iteration t is
``lr * schedule(t) * min(1, (t + 1) / warmup_iterations)`` (open_lth's warmup), with the
schedules of ``SCHEDULES``: ``"step"`` multiplies by ``gamma`` at each milestone (open_lth),
``"cosine"`` is ``(1 + cos(pi t / T)) / 2`` over the ``T = iterations`` of the run (Edge-Popup).

Only parameters with ``requires_grad`` are optimized (Edge-Popup trains the scores, not the frozen
weights). Step hooks (``StepHook``: ``before_step()`` after the backward pass, ``after_step()``
after the optimizer step) carry what acts on every step: the mask's enforcement, which comes
first, and e.g. the projection onto an l_inf ball of ``edge_popup``. ``mask=None`` trains
without a mask.

How a step computes its gradient is the step rule ``cfg.step_rule`` (``step_rules.STEP_RULES``:
plain, SAM, adaptive SAM, NVRM, all restricted to the mask); a penalty on the kept weights is
``cfg.regularizer`` (``regularizers.REGULARIZERS``: l2_norm, l2_init, Sakamoto & Sato Eq. 1).
One step: the rule's forward/backward pass(es), each followed by the gradients' masking; the
hooks' ``before_step`` (the penalty's gradient among them); the optimizer step; the hooks'
``after_step``; the rule's ``after_optimizer`` (NVRM's noise). For optimizers that keep zeros
(``keeps_zeros``: SGD, Adam) masked gradients suffice and the weights are not multiplied by the
mask after each step; that they stay exactly zero is checked at every evaluation.

Every ``eval_every`` iterations (and at the end) the validation loss is measured; the iteration of
its minimum is the early-stopping iteration of Frankle & Carbin (2019, Fig. 3), and the test
metric is reported there and at the end. Classification reports accuracy; regression (the sparse
teacher) reports the relative test error ``sum (f(x) - y)^2 / sum y^2`` against noiseless targets.
With label noise, the training metric is also reported on the relabelled and on the untouched
training examples separately (``train_metric_noisy``, ``train_metric_clean``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from lottery_common import Registry, check_float, check_int, derive_seed

from .data import Splits, TensorData, augment_flip_crop
from .device import autocast, generator
from .masks import Mask
from .models import prunable_names
from .regularizers import REGULARIZERS
from .step_rules import NOISES, STEP_RULES

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
"""name -> ``(params, cfg, fused) -> torch.optim.Optimizer``."""
SCHEDULES: Registry[Callable[[TrainConfig, int], float]] = Registry("learning-rate schedule")
"""name -> ``(cfg, iteration) -> factor`` multiplying ``cfg.lr`` (before warmup)."""
TASKS = ("classification", "regression")


class StepHook(Protocol):
    """Acts on every optimizer step of ``train``."""

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (iterations counted from 0, the initialization)."""

    iterations: int
    batch_size: int = 60
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iterations: int = 0
    eval_every: int = 100
    augment: bool = False
    data_order_seed: int = 0
    amp: bool = True
    eval_batch_size: int = 2000
    schedule: str = "step"
    test_history: bool = False
    step_rule: str = "plain"
    rho: float = 0.05
    variability: float = 0.01
    noise: str = "gaussian"
    noise_nonprunable: bool = True
    regularizer: str = "none"
    regularization: float = 0.0

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        OPTIMIZERS.check(self.optimizer)
        SCHEDULES.check(self.schedule)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("warmup_iterations", self.warmup_iterations, minimum=0)
        check_int("data_order_seed", self.data_order_seed, minimum=0)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        STEP_RULES.check(self.step_rule)
        check_float("rho", self.rho, low=0.0)
        check_float("variability", self.variability, low=0.0)
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {self.noise!r}")
        if self.regularizer != "none":
            REGULARIZERS.check(self.regularizer)
        check_float("regularization", self.regularization, low=0.0)

    def lr_at(self, iteration: int) -> float:
        factor = SCHEDULES[self.schedule](self, iteration)
        if self.warmup_iterations:
            factor *= min(1.0, (iteration + 1) / self.warmup_iterations)
        return self.lr * factor


@dataclass
class TrainResult:
    """Measurements of one run; ``final_state`` and ``captured_state`` are CPU state dicts."""

    early_stop_iteration: int
    val_loss_min: float
    test_loss_at_stop: float
    test_metric_at_stop: float
    test_loss_end: float
    test_metric_end: float
    train_loss_end: float
    train_metric_end: float
    extra: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    final_state: dict[str, torch.Tensor] = field(default_factory=dict)
    captured_state: dict[str, torch.Tensor] | None = None

    def summary(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in (
            "early_stop_iteration", "val_loss_min", "test_loss_at_stop", "test_metric_at_stop",
            "test_loss_end", "test_metric_end", "train_loss_end", "train_metric_end")}
        return {**out, **self.extra}


@SCHEDULES.register("step")
def _step_schedule(cfg: TrainConfig, iteration: int) -> float:
    return cfg.gamma ** sum(1 for m in cfg.milestones if iteration >= m)


@SCHEDULES.register("cosine")
def _cosine_schedule(cfg: TrainConfig, iteration: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * iteration / cfg.iterations))


def keeps_zeros(build: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """Mark an optimizer builder whose update of an entry is exactly zero when the entry, its
    gradient and its state are zero: the training loop then masks only the gradients."""
    build.keeps_zeros = True  # type: ignore[attr-defined]
    return build


@OPTIMIZERS.register("sgd")
@keeps_zeros
def _sgd(params: list[nn.Parameter], cfg: TrainConfig, fused: bool | None) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, fused=fused)


@OPTIMIZERS.register("adam")
@keeps_zeros
def _adam(params: list[nn.Parameter], cfg: TrainConfig, fused: bool | None
          ) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` (all of them, except frozen Edge-Popup weights)."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``OPTIMIZERS[cfg.optimizer]`` over the trainable parameters, fused (one kernel for all
    parameters) where this torch build supports it for their device, else the default
    multi-tensor implementation."""
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    build = OPTIMIZERS[cfg.optimizer]
    try:
        return build(params, cfg, True)
    except (RuntimeError, TypeError, ValueError):  # fused unsupported (old torch or device)
        return build(params, cfg, None)


def loss_fn(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (classification) or mean squared error (regression)."""
    if task == "classification":
        return nn.functional.cross_entropy(out.float(), y)
    return torch.mean((out.float() - y) ** 2)


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorData, task: str, device: torch.device,
             batch_size: int = 2000, amp: bool = True) -> tuple[float, float]:
    """(mean loss, metric) on ``data``: accuracy, or the relative error ``sum r^2 / sum y^2``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    was_training = model.training
    model.eval()
    total_loss, metric_num, metric_den = 0.0, 0.0, 0.0
    for start in range(0, len(data), batch_size):
        x = data.x[start:start + batch_size].to(device, non_blocking=True)
        y = data.y[start:start + batch_size].to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(x)
        out = out.float()
        if task == "classification":
            total_loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            metric_num += float((out.argmax(1) == y).sum())
            metric_den += y.shape[0]
        else:
            sq = (out - y) ** 2
            total_loss += float(sq.sum())
            metric_num += float(sq.sum())
            metric_den += float((y ** 2).sum())
    model.train(was_training)
    return total_loss / len(data), metric_num / metric_den


_NO_CAST = contextlib.nullcontext()


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The step's autocast when mixed precision is off: one shared no-op context."""
    return _NO_CAST


def _prunable_weights(model: nn.Module, mask: Mask | None) -> dict[str, torch.Tensor]:
    """Copies of the prunable weights (``mask``'s names, or all of the model's)."""
    params = dict(model.named_parameters())
    names = mask.names() if mask is not None else prunable_names(model)
    return {n: params[n].detach().clone() for n in names if n in params}


@torch.no_grad()
def _distances(model: nn.Module, mask: Mask | None, start: dict[str, torch.Tensor]
               ) -> dict[str, float]:
    """``distance_from_start = ||m * (theta_T - theta_start)||`` and ``weight_norm = ||m *
    theta_T||`` over the prunable weights (Sakamoto & Sato Sec. 3.3, lth-pacbayes'
    ``l2_dist`` / ``l2_norm``); ``theta_start`` is the rewind point of an IMP level."""
    final = _prunable_weights(model, mask)
    dist = sum(float((final[n] - start[n]).pow(2).sum()) for n in start)
    norm = sum(float(final[n].pow(2).sum()) for n in start)
    return {"distance_from_start": math.sqrt(dist), "weight_norm": math.sqrt(norm)}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class BatchOrder:
    """Batch indices as a function of the iteration (epoch-seeded permutations, last batch short).

    Each epoch's permutation is drawn on the CPU generator (the same order on every device) and
    kept on ``device``, so that no step copies indices from the host (which on CUDA would
    synchronize the stream every step)."""

    def __init__(self, n: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu") -> None:
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.per_epoch = math.ceil(n / self.batch_size)
        self.device = torch.device(device)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, iteration: int) -> torch.Tensor:
        epoch, b = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            seed = derive_seed(self.seed, "data_order", epoch)
            self._perm = torch.randperm(self.n, generator=generator(seed)).to(self.device)
            self._epoch = epoch
        return self._perm[b * self.batch_size:(b + 1) * self.batch_size]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists, else None; one of another run is refused."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("key") != key:
        raise ValueError(f"{path} is a checkpoint of another training run (other settings or "
                         f"start); delete it to start this run from its beginning")
    return state


def train(model: nn.Module, mask: Mask | None, splits: Splits, cfg: TrainConfig, *, task: str,
          device: torch.device, start_iteration: int = 0, capture_iteration: int | None = None,
          progress: bool = False, desc: str = "train", hooks: Sequence[StepHook] = (),
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0
          ) -> TrainResult:
    """Train ``model`` (moved to ``device``) under ``mask`` (None: no mask) from
    ``start_iteration`` to ``cfg.iterations``; the state after ``capture_iteration`` steps is
    returned for rewinding. ``hooks`` act on every step after the mask's enforcement.

    ``splits`` should already live on ``device`` (``Splits.to``) to avoid per-batch copies.

    With ``checkpoint`` (a file) and ``checkpoint_every = n``, the run saves every n iterations
    the model, the optimizer, the early-stopping bookkeeping, the captured rewind state and the
    random states (augmentation, dropout); the data order is a function of the iteration. A run
    that finds the file resumes from it and ends with the same weights as an uninterrupted run;
    the file is deleted once the run completes. ``hooks`` must then carry no state of their own.
    Throughput (``extra["images_per_second"]``, training steps only, evaluations excluded) and
    the training metric at the early-stopping iteration (``extra["train_metric_at_stop"]``)
    are reported; ``cfg.test_history`` adds the test loss and metric at every evaluation to
    ``history``. On CUDA, conv nets run channels-last.
    """
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=0)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    start_iteration = check_int("start_iteration", start_iteration, minimum=0,
                                maximum=cfg.iterations - 1)
    if capture_iteration is not None:
        check_int("capture_iteration", capture_iteration, minimum=start_iteration,
                  maximum=cfg.iterations - 1)
    model.to(device)
    channels_last = device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:  # faster convolutions on CUDA; the CPU path keeps the default layout
        model.to(memory_format=torch.channels_last)
    enforcer = None
    if mask is not None:
        mask = mask.to(device)
        mask.apply(model)
        enforcer = mask.enforcer(model, weights_after_step=not getattr(
            OPTIMIZERS[cfg.optimizer], "keeps_zeros", False))
    start_state = _prunable_weights(model, mask)
    step_hooks: list[StepHook] = list(hooks)
    if cfg.regularizer != "none":
        step_hooks.append(REGULARIZERS[cfg.regularizer](model, mask, cfg.regularization))
    optimizer = make_optimizer(model, cfg)
    order = BatchOrder(len(splits.train), cfg.batch_size, cfg.data_order_seed,
                       splits.train.x.device)
    rule = STEP_RULES[cfg.step_rule](model, mask, cfg, trainable_parameters(model),
                                     order.per_epoch, cfg.data_order_seed)
    cast = autocast if cfg.amp and device.type == "cuda" else _no_autocast
    aug_gen = generator(derive_seed(cfg.data_order_seed, "augment", start_iteration)) if cfg.augment \
        else None
    train_x, train_y = splits.train.x, splits.train.y
    history: dict[str, list[float]] = {"iteration": [], "val_loss": [], "val_metric": []}
    if cfg.test_history:
        history.update(test_loss=[], test_metric=[])
    best_loss, best_it, best_state = math.inf, start_iteration, None
    captured = None
    dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
    if dropout:  # dropout draws from the global generator: seed it, save it in checkpoints
        torch.manual_seed(derive_seed(cfg.data_order_seed, "dropout", start_iteration))
    eval_seconds = 0.0

    def checkpoint_eval(it: int) -> None:
        with rule.clean_weights():
            measure(it)

    def measure(it: int) -> None:
        nonlocal best_loss, best_it, best_state, eval_seconds
        began = time.perf_counter()
        if enforcer is not None and not enforcer.weights_after_step:
            enforcer.check()
        val_loss, val_metric = evaluate(model, splits.val, task, device, cfg.eval_batch_size,
                                        cfg.amp)
        history["iteration"].append(it)
        history["val_loss"].append(val_loss)
        history["val_metric"].append(val_metric)
        if cfg.test_history:
            test_loss, test_metric = evaluate(model, splits.test, task, device,
                                              cfg.eval_batch_size, cfg.amp)
            history["test_loss"].append(test_loss)
            history["test_metric"].append(test_metric)
        if val_loss < best_loss:
            best_loss, best_it = val_loss, it
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        eval_seconds += time.perf_counter() - began

    def snapshot(next_it: int) -> dict[str, Any]:
        return {"key": resume_key, "iteration": next_it, "model": _cpu_state(model),
                "optimizer": optimizer.state_dict(), "history": history, "best_loss": best_loss,
                "best_it": best_it, "best_state": best_state, "captured": captured,
                "augment_rng": None if aug_gen is None else aug_gen.get_state(),
                "dropout_rng": torch.get_rng_state() if dropout else None,
                "step_rule": rule.state_dict(),
                "cuda_rng": (torch.cuda.get_rng_state_all()
                             if dropout and device.type == "cuda" else None)}

    resume_key = {"config": dataclasses.asdict(cfg), "task": task,
                  "start_iteration": start_iteration, "capture_iteration": capture_iteration}
    first = start_iteration
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        saved = load_checkpoint(checkpoint, resume_key)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            history = saved["history"]
            best_loss, best_it, best_state = saved["best_loss"], saved["best_it"], saved["best_state"]
            captured = saved["captured"]
            if aug_gen is not None:
                aug_gen.set_state(saved["augment_rng"])
            if dropout:
                torch.set_rng_state(saved["dropout_rng"])
                if saved["cuda_rng"] is not None:
                    torch.cuda.set_rng_state_all(saved["cuda_rng"])
            rule.load_state_dict(saved["step_rule"])
            first = int(saved["iteration"])

    model.train()
    began = time.perf_counter()
    steps: Any = range(first, cfg.iterations)
    if progress:
        steps = tqdm(steps, desc=desc, leave=False, mininterval=1.0)
    x = y = None

    def forward_backward() -> torch.Tensor:
        with cast(device):
            out = model(x)
        loss = loss_fn(task, out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if enforcer is not None:
            enforcer.before_step()
        return loss

    for it in steps:
        if checkpoint is not None and checkpoint_every and it > first \
                and (it - start_iteration) % checkpoint_every == 0:
            save_checkpoint(checkpoint, snapshot(it))
        if capture_iteration == it:
            with rule.clean_weights():
                captured = _cpu_state(model)
        evaluation_step = (it - start_iteration) % cfg.eval_every == 0
        if evaluation_step:
            checkpoint_eval(it)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(it)
        idx = order(it)
        x, y = train_x[idx], train_y[idx]
        if aug_gen is not None:
            x = augment_flip_crop(x, aug_gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        rule.gradients(forward_backward, evaluation_step)
        for hook in step_hooks:
            hook.before_step()
        rule.before_optimizer()
        optimizer.step()
        if enforcer is not None:
            enforcer.after_step()
        for hook in step_hooks:
            hook.after_step()
        rule.after_optimizer(it)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    step_seconds = time.perf_counter() - began - eval_seconds
    rule.finish()
    checkpoint_eval(cfg.iterations)
    final_state = _cpu_state(model)
    test_loss_end, test_metric_end = evaluate(model, splits.test, task, device,
                                              cfg.eval_batch_size, cfg.amp)
    train_loss_end, train_metric_end = evaluate(model, splits.train, task, device,
                                                cfg.eval_batch_size, cfg.amp)
    steps_run = cfg.iterations - first
    extra = {"images_per_second": (steps_run * min(cfg.batch_size, len(splits.train))
                                   / step_seconds if steps_run and step_seconds > 0 else math.nan),
             **rule.stats(), **_distances(model, mask, start_state)}
    noisy = splits.info.get("noisy_train_mask")
    if noisy is not None and bool(noisy.any()) and not bool(noisy.all()):
        # label noise (spec sec. 0): training metric on the relabelled and on the clean examples
        for key, rows in (("noisy", noisy), ("clean", ~noisy)):
            idx = rows.nonzero().squeeze(1).to(train_x.device)
            _, extra[f"train_metric_{key}"] = evaluate(
                model, TensorData(train_x[idx], train_y[idx]), task, device,
                cfg.eval_batch_size, cfg.amp)
        extra["train_fraction_noisy"] = int(noisy.sum()) / noisy.numel()
    if best_state is None:  # the validation loss was never finite (diverged run)
        test_loss_stop, test_metric_stop = test_loss_end, test_metric_end
        extra["train_metric_at_stop"] = train_metric_end
    else:
        model.load_state_dict(best_state)
        test_loss_stop, test_metric_stop = evaluate(model, splits.test, task, device,
                                                    cfg.eval_batch_size, cfg.amp)
        _, extra["train_metric_at_stop"] = evaluate(model, splits.train, task, device,
                                                    cfg.eval_batch_size, cfg.amp)
        model.load_state_dict(final_state)
    if checkpoint is not None and checkpoint.exists():
        checkpoint.unlink()  # the run is complete: its result supersedes the checkpoint
    return TrainResult(early_stop_iteration=best_it, val_loss_min=best_loss,
                       test_loss_at_stop=test_loss_stop, test_metric_at_stop=test_metric_stop,
                       test_loss_end=test_loss_end, test_metric_end=test_metric_end,
                       train_loss_end=train_loss_end, train_metric_end=train_metric_end,
                       extra=extra, history=history, final_state=final_state,
                       captured_state=captured)

"""Device choice, seeded generators and mixed precision.

Every random draw of the backend comes from an explicit ``torch.Generator`` on the CPU (model
initialization, data order, random pruning scores, tie breaks), so a fixed seed gives the same
numbers on CPU and on a GPU up to floating-point summation order. Seeds of separate streams come
from ``lottery_common.derive_seed``, the derivation the experiment engine uses.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from lottery_common import check_int

DEVICES = ("auto", "cpu", "cuda", "mps")


DEVICE_ENV = "LOTTERY_LAB_DEVICE"


def choose_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks ``$LOTTERY_LAB_DEVICE`` when set, else cuda, then mps, then cpu; any
    other name must be available."""
    if name == "auto" and os.environ.get(DEVICE_ENV, "auto") != "auto":
        name = os.environ[DEVICE_ENV]
    if not isinstance(name, str) or name.split(":")[0] not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES} (optionally 'cuda:N'), got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False "
                         "(install a CUDA build of torch or use device='cpu')")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but it is not available on this machine")
    return torch.device(name)


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (a non-negative int)."""
    seed = check_int("seed", seed, minimum=0)
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Mixed precision (bfloat16 autocast) on CUDA when ``enabled``; a no-op on CPU and MPS.

    bfloat16 has float32's exponent range, so no loss scaling is needed.
    """
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield

"""Where data sets are read from: ``$LOTTERY_LAB_DATA``, else ``~/.cache/lottery-lab/data``.

The folder holds one subfolder per data set (``mnist/``, ``fashion_mnist/``, ``cifar10/`` ...).
No default is relative to the source tree: an installed package has no meaningful place next to
its files. The README, the tests and CI set ``$LOTTERY_LAB_DATA`` where they need real data.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "LOTTERY_LAB_DATA"
"""The environment variable naming the data directory."""


def default_data_dir() -> Path:
    """``$LOTTERY_LAB_DATA`` if set and not empty, else ``~/.cache/lottery-lab/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lottery-lab" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` when given, else ``default_data_dir()``."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()

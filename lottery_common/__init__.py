"""Helpers shared by every package of the project (numpy and the standard library only).

* argument checks (``check_int``, ``check_float``, ``check_array``, ``as_generator``): a bad value
  raises a one-line ``ValueError`` naming the argument, the value and what is allowed;
* ``derive_seed(master_seed, *coordinates)`` -- the one seed derivation (63-bit, SeedSequence):
  the experiment engine derives each (cell, trial) seed with it, the torch code each random stream;
* ``stable_hash(*parts)`` -- the one content hash (SHA-256 hex of a canonical encoding): cache
  folders, code fingerprints;
* ``default_data_dir`` / ``resolve_data_dir`` -- ``$LOTTERY_LAB_DATA``, else
  ``~/.cache/lottery-lab/data``;
* ``Registry`` -- name -> object, the extension point of models, layers, criteria and branches;
* ``fingerprint`` -- digests of Python modules by their syntax trees (docstrings and comments
  ignored) and the modules they import, so that results computed by older code are recognised;
* ``__version__`` -- the installed version of the ``lottery-lab`` distribution.

Nothing here imports ``sparse_teacher``, ``subset_sum``, ``deep_lottery`` or ``experiments``: they
all import it, and none of them reaches into another's private modules.
"""

from importlib.metadata import PackageNotFoundError, version

from .checks import as_generator, check_array, check_float, check_int
from .data_dir import DATA_ENV, default_data_dir, resolve_data_dir
from .registry import Registry
from .seeds import derive_seed, plain_data, stable_hash

try:
    __version__ = version("lottery-lab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["DATA_ENV", "Registry", "__version__", "as_generator", "check_array", "check_float",
           "check_int", "default_data_dir", "derive_seed", "plain_data", "resolve_data_dir",
           "stable_hash"]

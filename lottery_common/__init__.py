"""Seeds and hashes shared by every package of the project (numpy and the standard library only).

* ``derive_seed(master_seed, *coordinates)`` -- the one seed derivation (63-bit, SeedSequence):
  the experiment engine derives each (cell, trial) seed with it, the IMP code each random stream.
* ``stable_hash(*parts)`` -- the one content hash (SHA-256 hex of a canonical encoding): cache
  folders, code fingerprints.
* ``fingerprint`` -- digests of Python modules by their syntax trees (docstrings and comments
  ignored) and the modules they import, so that results computed by older code are recognised.

Nothing here imports ``sparse_teacher``, ``subset_sum`` or ``experiments``: they all import it.
"""

from .seeds import derive_seed, plain_data, stable_hash

__all__ = ["derive_seed", "plain_data", "stable_hash"]

"""Import every experiment module so that each registers itself.

A module listed here whose optional requirement is missing is skipped with a warning by
``experiments.registry`` callers; add new experiment modules to ``MODULES``.
"""

from __future__ import annotations

import importlib

MODULES: list[str] = []
MODULES += ["convergence", "convex_radius", "sample_complexity", "local_convexity"]
MODULES += ["lueker", "perturbed_coverage", "strong_lth_construction"]
MODULES += ["imp_synthetic", "imp_mnist", "lth_lenet"]
MODULES += ["noise", "tensor_init_exp"]

for _module in MODULES:
    importlib.import_module(f"experiments.{_module}")

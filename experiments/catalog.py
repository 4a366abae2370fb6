"""Import every experiment module so that each registers itself.

Modules are grouped by paper (``zhang2021/``, ``frankle2019/``, ...), one module per figure or
table; a new experiment is one module plus its entry in ``MODULES``.
"""

from __future__ import annotations

import importlib

MODULES: list[str] = []
MODULES += [f"zhang2021.{m}" for m in ("convergence", "convex_radius", "sample_complexity",
                                       "noise", "tensor_init", "local_convexity",
                                       "imp_synthetic", "imp_mnist")]
MODULES += ["frankle2019.lth_lenet", "frankle2019.lth_conv", "frankle2019.lth_dropout",
            "frankle2019.lth_deep"]
MODULES += [f"sakamoto2022.{m}" for m in ("lr_label_noise", "ticket_sharpness", "sam_tickets",
                                          "l2_init", "pac_bayes_bound", "pruning_criteria",
                                          "mask_transfer")]
MODULES += ["pensia2020.lueker", "pensia2020.strong_lth_construction"]
MODULES += ["xiong2023.perturbed_coverage", "xiong2023.pgd_strong_lth", "xiong2023.gd_mask_descent"]
MODULES += ["ramanujan2020.edge_popup"]

for _module in MODULES:
    importlib.import_module(f"experiments.{_module}")

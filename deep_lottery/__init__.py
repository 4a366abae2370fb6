"""The PyTorch backend (CPU or GPU) for deep-network lottery tickets.

Layout (one job per module; every extension point is a ``lottery_common.Registry``):

* ``device``     -- device choice (cuda, mps, cpu), seeded generators, mixed precision on CUDA.
* ``idx_files``, ``data`` -- MNIST / Fashion-MNIST (IDX files) and CIFAR-10/100 (python pickle
  batches) read by our own small readers, validation split, training subsample of size N,
  symmetric label noise, and the sparse teacher's synthetic data (through ``sparse_teacher.teacher``).
* ``layers``     -- layer types (``LAYER_TYPES``): dense, masked, score (Edge-Popup).
* ``models``     -- model builders (``MODELS``), written once against a layer type, and the
  initializations (``INITS``).
* ``masks``      -- the ``Mask`` object (one boolean tensor per prunable weight) and its enforcement.
* ``pruning``    -- pruning criteria (``CRITERIA``) and layer-wise / global magnitude pruning.
* ``training``   -- the one training loop (``OPTIMIZERS``, ``SCHEDULES``, step hooks, early stop).
* ``step_rules`` -- how a step takes its gradient (``STEP_RULES``): plain, SAM, adaptive SAM, NVRM,
  restricted to the mask.
* ``regularizers`` -- penalties on the kept weights (``REGULARIZERS``): l2_norm, l2_init.
* ``imp``        -- the IMP driver (levels, rewinding, resume) and its control ``BRANCHES``.
* ``edge_popup`` -- Edge-Popup score training, PGD in an l_inf ball, export to ``Mask`` + weights.
* ``tables``     -- per-level IMP records to one row of short lists (experiments) and back.
* ``curvature``  -- Hessian of a ticket restricted to its mask (M H M): Hutchinson trace, top
  eigenvalues, Lanczos / SLQ density, loss along a direction.
* ``pac_bayes``  -- spike-and-slab and Gaussian PAC-Bayes bounds of a ticket (KL, kl^-1, bound
  optimization, rigorous variant), expected sharpness, distances from the initialization.

Decisions (by the project lead):

* torch is a dependency (``torch>=2.2``). On CPU-only machines install the CPU wheel (the README's
  constraints file pins ``torch==2.13.0``); GPU users install their CUDA build of torch first.
* Device: ``"auto"`` (``$LOTTERY_LAB_DEVICE`` if set, else cuda, mps, cpu) or an explicit name;
  bfloat16 autocast on CUDA; every random draw from an explicit seed.
* torchvision is not used: its PyPI wheels do not import beside the CPU torch wheel. Data sets are
  read from their standard on-disk formats by ``data`` (no torchvision transforms either: the CIFAR
  augmentation, random flip and 4-pixel padded crop, is done on batches of tensors).
"""

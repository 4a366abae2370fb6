"""PyTorch backend: data sets, models, masks and iterative magnitude pruning (IMP) with rewinding.

Layout (one job per module):

* ``device``   -- device choice (cuda, mps, cpu), seeded generators, mixed precision on CUDA.
* ``data``     -- MNIST / Fashion-MNIST (IDX files) and CIFAR-10/100 (python pickle batches) read
  from a data directory by our own small readers, validation split, training subsample of size N,
  symmetric label noise, and the sparse teacher's synthetic regression data.
* ``models``   -- the one-hidden-layer student, Lenet-300-100, Lenet-5, Conv-2/4/6, ResNet-20,
  VGG-16/19 with Gaussian Glorot or Kaiming initialization.
* ``masks``    -- the ``Mask`` object (one boolean tensor per prunable weight) and its enforcement.
* ``pruning``  -- pruning criteria and layer-wise / global magnitude pruning, computed on the device.
* ``training`` -- the masked training loop with early-stopping bookkeeping.
* ``imp``      -- the IMP driver (levels, rewinding, resume) and its controls.
* ``tables``   -- per-level IMP records to one row of short lists (experiments) and back.

Decisions (by the project lead):

* torch is a dependency (``torch>=2.2``). On CPU-only machines install the CPU wheel (the README's
  constraints file pins ``torch==2.13.0``); GPU users install their CUDA build of torch first.
* Device: ``"auto"`` (``$LOTTERY_LAB_DEVICE`` if set, else cuda, mps, cpu) or an explicit name;
  bfloat16 autocast on CUDA; every random draw from an explicit seed.
* torchvision is not used: its PyPI wheels do not import beside the CPU torch wheel. Data sets are
  read from their standard on-disk formats by ``data`` (no torchvision transforms either: the CIFAR
  augmentation, random flip and 4-pixel padded crop, is done on batches of tensors).
"""

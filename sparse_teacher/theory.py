"""The scalings predicted by the theory of Zhang et al. (NeurIPS 2021), as functions.

Each function states one prediction with its free constants as arguments; experiments fit those
constants to measured data and draw the fitted prediction over it. Constants of the theorems
(poly(K, kappa) factors) are not known numerically, so every check is about the *shape*:

* Theorem 1 (local convexity): radius of the convex region ``R(r) = a - b sqrt(r)`` (b > 0),
  i.e. Theta(1) - Theta(sqrt(r / N)) at fixed N.
* Theorem 2 (AGD convergence): ``||W(t) - W*|| <= nu^t ||W(0) - W*||`` with ``nu`` growing with r
  at fixed N and ``nu_AGD < nu_GD`` (heavy ball: 1 - nu ~ sqrt(1 - nu_GD) rather than 1 - nu_GD).
* Noise floor (Theorem 2): ``||W - W*|| / ||W*|| = c sqrt(r) * (sigma / E_y)`` at fixed N, K, d.
* Sample complexity: ``N* = c r log d`` (times poly(K, kappa)), linear in the number of
  unpruned weights, not in d.
* Lemma 1 (tensor initialization): ``||W0 - W*|| / ||W*|| = c sqrt(r log d / N)``.
"""

from __future__ import annotations

import numpy as np


def convex_radius(r: np.ndarray, a: float, b: float) -> np.ndarray:
    """Theorem 1: radius of the locally convex region, ``a - b sqrt(r)``."""
    return a - b * np.sqrt(np.asarray(r, dtype=float))


def noise_floor(r: np.ndarray, noise_level: np.ndarray, c: float) -> np.ndarray:
    """Theorem 2's error floor: ``c sqrt(r) * noise_level``."""
    return c * np.sqrt(np.asarray(r, dtype=float)) * np.asarray(noise_level, dtype=float)


def sample_complexity(r: np.ndarray, d: int, c: float) -> np.ndarray:
    """Samples needed for recovery: ``c r log d``."""
    return c * np.asarray(r, dtype=float) * np.log(d)


def init_error(N: np.ndarray, r: np.ndarray, d: int, c: float) -> np.ndarray:
    """Lemma 1: tensor-initialization error ``c sqrt(r log d / N)``."""
    return c * np.sqrt(np.asarray(r, dtype=float) * np.log(d) / np.asarray(N, dtype=float))


def heavy_ball_rate(gd_rate: np.ndarray) -> np.ndarray:
    """Heavy-ball rate with optimal momentum from the GD rate: ``1 - sqrt(1 - nu_GD)``-type gain.

    For a quadratic with condition number kappa, GD with step 1/L has nu = 1 - 1/kappa, optimal
    heavy ball has nu = 1 - 2/(sqrt(kappa) + 1). Written in terms of nu_GD.
    """
    gd_rate = np.asarray(gd_rate, dtype=float)
    kappa = 1.0 / (1.0 - gd_rate)
    return 1.0 - 2.0 / (np.sqrt(kappa) + 1.0)

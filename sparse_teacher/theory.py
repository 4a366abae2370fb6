"""The scalings predicted by the theory of Zhang et al. (NeurIPS 2021), as functions.

Each function states one prediction with its free constants as arguments; experiments fit those
constants to measured data and draw the fitted prediction over it. Constants of the theorems
(poly(K, kappa) factors) are not known numerically, so every check is about the *shape*:

* Theorem 1 (local convexity): radius of the convex region ``R(r) = a - b sqrt(r)`` (b > 0),
  i.e. Theta(1) - Theta(sqrt(r / N)) at fixed N.
* Theorem 2 (AGD convergence): ``||W(t) - W*|| <= nu^t ||W(0) - W*||`` with ``nu`` growing with r
  at fixed N and ``nu_AGD < nu_GD``. How much faster depends on the momentum (``heavy_ball_rate``):
  with beta tuned to the slowest mode, ``beta* = (1 - sqrt(1 - nu_GD))^2``, heavy ball gets
  ``1 - nu = sqrt(1 - nu_GD)`` (the theorem's nu(beta*) = 1 - Theta(1/sqrt(K)) against
  nu(0) = 1 - Theta(1/K)); at a fixed beta, as in the experiments (beta = 0.2), the gain is only a
  constant factor, ``1 - nu ~ (1 - nu_GD) / (1 - beta)`` when 1 - nu_GD is small.
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


def heavy_ball_rate(gd_rate: np.ndarray, beta: float) -> np.ndarray:
    """Rate of heavy ball with momentum ``beta`` on the mode where GD contracts by ``gd_rate``.

    On a quadratic mode with eta * lambda = a = 1 - nu_GD (0 < a <= 1: the slow, non-oscillating
    mode that sets GD's rate), the iteration e(t+1) = (1 + beta - a) e(t) - beta e(t-1)
    contracts by the largest root modulus of z^2 - (1 + beta - a) z + beta = 0:
    ((1 + beta - a) + sqrt((1 + beta - a)^2 - 4 beta)) / 2 when the roots are real,
    sqrt(beta) when they are complex. At a fixed beta and small a this is about
    1 - a / (1 - beta) (a constant-factor gain); at the critical momentum
    beta = (1 - sqrt(a))^2 the roots meet at 1 - sqrt(a), the square-root gain of the module
    docstring.
    """
    a = 1.0 - np.asarray(gd_rate, dtype=float)
    b = 1.0 + beta - a
    disc = b * b - 4.0 * beta
    real = (b + np.sqrt(np.maximum(disc, 0.0))) / 2.0
    return np.where(disc >= 0, real, np.sqrt(beta))

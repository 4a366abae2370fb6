"""Sparse one-hidden-layer ReLU teacher-student model (Zhang et al., NeurIPS 2021)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lottery-lab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

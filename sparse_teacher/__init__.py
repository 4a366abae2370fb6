"""Sparse one-hidden-layer ReLU teacher-student model (Zhang et al., NeurIPS 2021): NumPy + Numba.

The PyTorch side (the torch ``Student``, IMP on the teacher's data) is ``deep_lottery``, which
reads the teacher's synthetic data through ``sparse_teacher.teacher``.
"""

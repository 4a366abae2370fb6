"""Shared set-up of the sparse teacher-student experiments (Zhang et al., NeurIPS 2021, Sec. 5).

One trial draws, from its own seed, a teacher (W* entries Uniform[-0.5, 0.5] on random supports
of size r*), the student supports (the teacher's plus r - r* random coordinates per neuron), a
data set x ~ N(0, I_d) with Gaussian label noise at level sigma / E_y, and a generator for the
initialization. Independent streams come from ``numpy.random.SeedSequence(seed).spawn``, so
changing one ingredient (say the noise level) never changes the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparse_teacher.problem import StudentProblem
from sparse_teacher.teacher import (
    Dataset,
    SparseTeacher,
    draw_student_supports,
    draw_teacher,
    make_dataset,
)

from ..registry import Param

AGD_PARAMS: dict[str, Param] = {
    "N": Param("int", low=1), "d": Param("int", low=1), "K": Param("int", low=1),
    "r": Param("int", low=1, high="d"), "lam": Param("float", low=0),
    "eta": Param("float", low=0, low_open=True),
    "beta": Param("float", low=0, high=1, high_open=True), "max_iter": Param("int", low=1),
}
"""Rules of the parameters the AGD experiments share: sizes, r <= d (student support = teacher
support), start distance lam >= 0, step eta > 0, momentum beta in [0, 1), iteration cap."""


@dataclass(frozen=True)
class Instance:
    teacher: SparseTeacher
    supports: np.ndarray
    data: Dataset
    problem: StudentProblem
    W_star: np.ndarray
    init_rng: np.random.Generator


def draw_instance(*, d: int, K: int, r: int, N: int, seed: int, r_star: int | None = None,
                  noise_level: float = 0.0) -> Instance:
    """Teacher, supports, data and an init generator for one trial (r* = r unless given)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
    teacher = draw_teacher(d, K, r if r_star is None else r_star, seed=streams[0])
    supports = draw_student_supports(teacher, r, seed=streams[1])
    data = make_dataset(teacher, N, seed=streams[2], noise_level=noise_level)
    problem = StudentProblem.from_data(data.X, data.y, supports)
    return Instance(teacher=teacher, supports=supports, data=data, problem=problem,
                    W_star=teacher.in_student_coordinates(supports), init_rng=streams[3])


def agd_summary(result: Any) -> dict[str, Any]:
    """The scalar outputs every AGD-based experiment records for one run."""
    rate = result.rate
    to_go = result.iterations_to_success
    return {
        "rel_error": float(result.rel_error),
        "success": bool(result.success),
        "outcome": result.outcome,
        "status": result.status,
        "n_iter": int(result.n_iter),
        "final_rate": float("nan") if rate is None else float(rate),
        "iterations_to_success": float("nan") if to_go is None else float(to_go),
        "reaches_teacher": result.outcome in ("success", "slow"),
    }

"""Resource guards: every entry point whose memory grows like 2^n (or with a parameter) refuses a
too-large input with a one-line ValueError before allocating it, and a MILP never waits forever.

The defaults are checked in a subprocess under a 4 GB address-space limit, so code without the
guards fails there with a MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import lottery_common.memory as memory_module
import sparse_teacher.problem as problem_module
from subset_sum import (
    coverage_steps,
    milp_subset_sum,
    perturbed_subset_sum,
    perturbed_subset_sum_batch,
    reachable_sets,
    reachable_union,
    rounded_dp,
    sup_error,
    sup_error_path,
)
from subset_sum import milp as milp_module
from subset_sum.construction import construct, random_network
from subset_sum.coverage import covering_size, random_sup_error
from subset_sum.perturbed import MAX_INTERVALS
from subset_sum.target_mlp import random_target

X20 = np.random.default_rng(0).uniform(-1.0, 1.0, 20)
X16 = np.random.default_rng(0).uniform(-1.0, 1.0, 16)


# ----------------------------------------------------------------------------- interval DP


@pytest.mark.parametrize(("name", "call"), [
    ("sup_error", lambda: sup_error(X20, max_intervals=1000)),
    ("sup_error_path", lambda: sup_error_path(X20, max_intervals=1000)),
    ("reachable_union", lambda: reachable_union(X20, max_intervals=1000)),
    ("reachable_sets", lambda: reachable_sets(X20, max_intervals=1000)),
    ("perturbed_subset_sum", lambda: perturbed_subset_sum(X20, 0.37, 0.0, max_intervals=1000)),
    ("perturbed_subset_sum_batch (row 1 of xs)",
     lambda: perturbed_subset_sum_batch(np.stack([np.full(20, 0.5), X20]), [0.3, 0.37], 0.0,
                                        max_intervals=1000)),  # equal sums merge in row 0
    ("coverage_steps", lambda: coverage_steps(X20, 0.0, 0.0, max_intervals=1000)),
    ("coverage_steps", lambda: covering_size(1e-12, 0.0, 0, n_max=40, max_intervals=1000)),
    ("sup_error", lambda: random_sup_error(20, 0.0, 0, max_intervals=1000)),
])
def test_every_interval_dp_entry_point_refuses_with_one_message(name, call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: "), message
    assert "max_intervals = 1000 intervals" in message
    assert "stopped before step" in message
    assert "use " in message and "or pass a larger max_intervals" in message


def test_interval_guard_names_the_growth_and_what_to_use():
    with pytest.raises(ValueError, match=(
            r"^sup_error: stopped before step \d+ of 20: the interval DP on n = 20 coefficients "
            r"\(eps = 0, tol = 0\) would hold more than max_intervals = 1000 intervals \(0.016 MB\); "
            r"nothing merges at eps = tol = 0, so it can grow to 2\^20 = 1.05e\+06 intervals "
            r"\(16.8 MB\); use a tolerance tol > 0 or eps > 0")):
        sup_error(X20, max_intervals=1000)
    with pytest.raises(ValueError, match=r"use meet_in_the_middle for eps = 0 \(exact, n <= 44\)"):
        perturbed_subset_sum(X20, 0.37, 0.0, max_intervals=1000)
    with pytest.raises(ValueError, match=r"use meet_in_the_middle_batch for eps = 0"):
        perturbed_subset_sum_batch(X20[None], [0.37], 0.0, max_intervals=1000)


def test_interval_guard_stops_before_the_step_that_would_exceed():
    """Step k is refused when U_(k-1) plus the step's buffer (twice U_(k-1)) would not fit."""
    counts = reachable_sets(X20).counts()  # |U_0|, ..., |U_20|, the same sets as the union's
    limit = 3 * int(counts[10]) - 1
    first = int(np.argmax(3 * counts[:20] > limit))  # the first U_j that does not fit with its buffer
    with pytest.raises(ValueError, match=rf"stopped before step {first + 1} of 20"):
        reachable_union(X20, max_intervals=limit)
    lo, hi = reachable_union(X20, max_intervals=3 * int(counts[:20].max()))  # just fits
    assert lo.size == counts[20]


def test_max_intervals_is_validated():
    with pytest.raises(ValueError, match=r"max_intervals must be >= 1, got 0"):
        sup_error(X16, max_intervals=0)
    with pytest.raises(ValueError, match=r"max_intervals must be an integer"):
        coverage_steps(X16, 0.0, 0.1, max_intervals=1.5)


def test_small_inputs_still_match_previous_results():
    """Values computed by the code before the guards (same inputs, default limits)."""
    assert sup_error(X16) == 0.0002822968217535138
    assert sup_error(X16, eps=0.01) == 0.0
    assert sup_error_path(X16)[-3:].tolist() == [0.001124064402970526, 0.0006138565456640377,
                                                 0.0002822968217535138]
    solution = perturbed_subset_sum(X16, 0.37, 0.0)
    assert solution.error == 2.725274397830102e-05
    assert np.flatnonzero(solution.mask).tolist() == [1, 6, 7, 10, 13, 14]
    x80 = np.random.default_rng(1).uniform(-1.0, 1.0, 80)
    assert coverage_steps(x80, 0.0, 1e-3) == 15
    assert coverage_steps(x80, 0.01, 1e-4) == 9


def test_default_allows_every_eps0_union_up_to_n24():
    """2^23 intervals before the last step plus its buffer fit the default (lueker's n range)."""
    assert 3 * 2**23 <= MAX_INTERVALS
    sup_error(X16, max_intervals=3 * 2**15)  # n = 16 at the same worst-case ratio


def test_exact_solution_says_it_is_proven_optimal():
    solution = perturbed_subset_sum(X16, 0.37, 0.0)
    assert solution.proven_optimal and solution.status == "optimal"


def test_tolerance_solution_says_it_is_not_proven_optimal():
    solution = perturbed_subset_sum(X16, 0.37, 0.01, tol=1e-4)
    assert solution.error == pytest.approx(9.999999999998899e-05)
    assert not solution.proven_optimal
    assert solution.status.startswith("not proven optimal (tolerance tol = 0.0001")


# ----------------------------------------------------------------------------- MILP


def test_milp_has_a_default_time_limit():
    assert inspect.signature(milp_subset_sum).parameters["time_limit"].default == 60.0


def test_milp_time_limit_returns_a_solution_not_proven_optimal():
    x = np.random.default_rng(2).uniform(-1.0, 1.0, 60)
    start = time.perf_counter()
    solution = milp_subset_sum(x, 0.123, time_limit=1.0)
    assert time.perf_counter() - start < 5.0
    assert not solution.proven_optimal
    assert solution.status.startswith("not proven optimal (time limit 1 s reached; ")
    assert solution.lower_bound <= solution.error
    assert solution.error == pytest.approx(abs(x[solution.mask].sum() - 0.123), abs=1e-15)


def test_milp_small_instance_is_proven_optimal():
    solution = milp_subset_sum(X16, 0.37)
    assert solution.proven_optimal and solution.status == "optimal"
    assert solution.error == pytest.approx(2.725274397830102e-05, abs=1e-12)


def test_milp_without_an_incumbent_at_the_limit_returns_the_empty_subset(monkeypatch):
    calls = []

    def out_of_time(*args, **kwargs):
        calls.append(kwargs["options"]["time_limit"])
        return SimpleNamespace(x=None, status=1, message="Time limit reached",
                               mip_dual_bound=0.0)

    monkeypatch.setattr(milp_module, "milp", out_of_time)
    solution = milp_subset_sum(X16, 0.37, time_limit=2.0)
    assert len(calls) == 1  # no retry once the time is up
    assert not solution.mask.any() and solution.error == pytest.approx(0.37)
    assert not solution.proven_optimal
    assert "time limit 2 s reached; the empty subset is returned" in solution.status


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "60"])
def test_milp_time_limit_is_validated(bad):
    with pytest.raises(ValueError, match=r"time_limit must"):
        milp_subset_sum(X16, 0.37, time_limit=bad)


# ----------------------------------------------------------------------------- other solvers


def test_rounded_dp_refuses_a_grid_that_overflows_the_bin_count():
    with pytest.raises(ValueError, match=r"grid = 1e-300 needs at least 1e\+300 bins"):
        rounded_dp([0.5, 0.5], 0.5, grid=1e-300)


def test_rounded_dp_reports_whether_the_certificate_closes():
    coarse = rounded_dp(X16, 0.37, grid=1e-2)
    assert coarse.proven_optimal == (coarse.error <= coarse.lower_bound)
    if not coarse.proven_optimal:
        assert coarse.status.startswith("not proven optimal (rounded to grid = 0.01")


def test_random_network_refuses_too_many_weights(monkeypatch):
    monkeypatch.setattr(memory_module, "MEMORY_BUDGET", 8 * 1000)
    random_network((10, 5), 10, 0)  # 2 n d_0 d_1 = 1000 weights: allowed
    with pytest.raises(ValueError, match=(
            r"^random_network: widths \(10, 5\) with n = 11 \(1.1e\+03 random weights, .*\) needs "
            r"0.0088 MB, above the 0.008 MB allowed .*use a smaller n")):
        random_network((10, 5), 11, 0)


def test_construct_refuses_meet_in_the_middle_beyond_its_range():
    target = random_target((2, 1), 0)
    network = random_network((2, 1), 45, 1)
    with pytest.raises(ValueError, match=r"^construct: eps = 0 .* n <= 44 .* got n = 45; use n <= 44 "
                                         r"or eps > 0"):
        construct(target, network, 0.0)


# ----------------------------------------------------------------------------- AGD, tensor init


@pytest.fixture(scope="module")
def small_problem():
    from sparse_teacher.teacher import draw_student_supports, draw_teacher, make_dataset

    teacher = draw_teacher(20, 2, 4, 0)
    supports = draw_student_supports(teacher, 6, 2)
    data = make_dataset(teacher, 50, 1)
    return (problem_module.StudentProblem.from_data(data.X, data.y, supports),
            teacher.in_student_coordinates(supports))


def test_agd_refuses_histories_above_the_budget(small_problem, monkeypatch):
    from sparse_teacher.agd import run_agd, run_agd_multistart

    problem, W_star = small_problem
    monkeypatch.setattr(memory_module, "MEMORY_BUDGET", 8 * 1000)
    with pytest.raises(ValueError, match=(
            r"^run_agd: max_iter = 1000 \(loss history of 1001 doubles\) needs 0.00801 MB, above "
            r"the 0.008 MB allowed \(lottery_common.memory.MEMORY_BUDGET\); use max_iter <= 999$")):
        run_agd(problem, 0.9 * W_star, max_iter=1000)
    with pytest.raises(ValueError, match=r"loss and error histories of 1000 doubles each.*"
                                         r"max_iter <= 499$"):
        run_agd(problem, 0.9 * W_star, max_iter=999, W_star=W_star)
    with pytest.raises(ValueError, match=r"^run_agd_multistart: M = 4 starts and max_iter = 300 .*"
                                         r"use max_iter <= 124 or fewer starts per call$"):
        run_agd_multistart(problem, np.stack([0.9 * W_star] * 4), max_iter=300, W_star=W_star)
    run_agd(problem, 0.9 * W_star, max_iter=999)  # fits


def test_agd_without_w_star_follows_the_same_path(small_problem):
    from sparse_teacher.agd import run_agd, run_agd_multistart

    problem, W_star = small_problem
    tracked = run_agd(problem, 0.9 * W_star, max_iter=200, W_star=W_star)
    plain = run_agd(problem, 0.9 * W_star, max_iter=200)
    assert plain.rel_error_history is None
    np.testing.assert_array_equal(plain.loss_history, tracked.loss_history)
    np.testing.assert_array_equal(plain.W, tracked.W)
    batch = run_agd_multistart(problem, np.stack([0.9 * W_star] * 2), max_iter=200)
    assert batch[0].rel_error_history is None
    np.testing.assert_allclose(batch[0].loss_history, tracked.loss_history, rtol=1e-12)


def test_tensor_initialization_refuses_the_k_cubed_design(monkeypatch):
    from sparse_teacher.teacher import draw_teacher, make_dataset
    from sparse_teacher.tensor_init import match_permutation, tensor_initialization

    teacher = draw_teacher(12, 3, 3, 0)
    data = make_dataset(teacher, 600, 1)
    monkeypatch.setattr(memory_module, "MEMORY_BUDGET", 8 * 3**3)  # K <= 3
    four = np.arange(12).reshape(4, 3)
    with pytest.raises(ValueError, match=(
            r"^tensor_initialization: K = 4 neurons \(the \(4\^2, 4\) least-squares design of the "
            r"magnitudes rho\) needs .* allowed .*; use fewer neurons \(K <= 3\), or "
            r"first_moment_estimate for disjoint supports$")):
        tensor_initialization(data.X, data.y, four, seed=0)
    assert tensor_initialization(data.X, data.y, teacher.supports, seed=0).W0.shape == (3, 3)
    same = np.tile(np.arange(3), (4, 1))
    with pytest.raises(ValueError, match=r"^match_permutation: K = 4 identical supports of size 3"):
        match_permutation(np.zeros((4, 3)), np.ones((4, 3)), same)


# ----------------------------------------------------------------------------- defaults


GUARDED_DEFAULTS = textwrap.dedent("""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4_000_000_000, 4_000_000_000))
    import numpy as np
    from subset_sum import coverage_steps, sup_error
    from subset_sum.construction import random_network
    from experiments.pensia2020.lueker import run_cell
    from sparse_teacher.agd import run_agd
    from sparse_teacher.problem import StudentProblem
    from sparse_teacher.teacher import draw_student_supports, draw_teacher, make_dataset

    teacher = draw_teacher(20, 2, 4, 0)
    supports = draw_student_supports(teacher, 6, 2)
    data = make_dataset(teacher, 50, 1)
    problem = StudentProblem.from_data(data.X, data.y, supports)
    W_star = teacher.in_student_coordinates(supports)
    cases = {
        "sup_error": lambda: sup_error(np.random.default_rng(0).uniform(-1, 1, 30)),
        "lueker": lambda: run_cell({"measure": "sup_error", "n": 34}, 0),
        "coverage": lambda: coverage_steps(np.random.default_rng(0).uniform(-1, 1, 80), 0.0, 0.0),
        "agd": lambda: run_agd(problem, W_star, max_iter=10**9, W_star=W_star),
        "network": lambda: random_network((784, 500, 10), 1000, 0),
    }
    for name, call in cases.items():
        try:
            call()
            print(name, "| no error")
        except ValueError as exc:
            print(name, "| ValueError |", exc)
        except MemoryError:
            print(name, "| MemoryError")
""")


def test_defaults_refuse_the_issue_cases_within_4_gb():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", GUARDED_DEFAULTS], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" | ", 1) for line in done.stdout.splitlines() if " | " in line)
    assert lines["sup_error"].startswith(
        "ValueError | sup_error: stopped before step 25 of 30: the interval DP on n = 30 "
        "coefficients (eps = 0, tol = 0) would hold more than max_intervals = 33554432 intervals "
        "(537 MB); nothing merges at eps = tol = 0, so it can grow to 2^30 = 1.07e+09 intervals "
        "(17.2 GB); use a tolerance tol > 0")
    assert lines["lueker"].startswith("ValueError | sup_error: stopped before step")
    assert "n = 34 coefficients" in lines["lueker"]
    assert lines["coverage"].startswith("ValueError | coverage_steps: stopped before step")
    assert lines["agd"] == (
        "ValueError | run_agd: max_iter = 1000000000 (loss and error histories of 1000000001 "
        "doubles each) needs 16 GB, above the 2.15 GB allowed "
        "(lottery_common.memory.MEMORY_BUDGET); use max_iter <= 134217727")
    assert lines["network"].startswith("ValueError | random_network: widths (784, 500, 10) with "
                                       "n = 1000")
    assert time.perf_counter() - start < 120

"""The teacher, student supports, data and the compact/augmented conversions."""

import numpy as np
import pytest

from sparse_teacher.teacher import (
    draw_student_supports,
    draw_teacher,
    make_dataset,
    network_outputs,
    supports_from_mask,
    to_augmented,
    to_compact,
    validate_supports,
)


def test_teacher_draw_shapes_and_ranges():
    t = draw_teacher(d=40, K=4, r_star=6, seed=0)
    assert t.supports.shape == (4, 6) and t.weights.shape == (4, 6)
    assert np.all(np.diff(t.supports, axis=1) > 0)
    assert t.supports.min() >= 0 and t.supports.max() < 40
    assert np.all(np.abs(t.weights) <= 0.5)


def test_student_supports_contain_teacher_and_have_r_entries():
    t = draw_teacher(d=40, K=4, r_star=6, seed=0)
    S = draw_student_supports(t, r=15, seed=1)
    assert S.shape == (4, 15)
    for j in range(4):
        assert set(t.supports[j]) <= set(S[j])
        assert len(set(S[j])) == 15


def test_student_coordinates_embed_teacher_exactly():
    t = draw_teacher(d=30, K=3, r_star=5, seed=2)
    S = draw_student_supports(t, r=12, seed=3)
    W = t.in_student_coordinates(S)
    X = np.random.default_rng(0).standard_normal((50, 30))
    np.testing.assert_allclose(network_outputs(W, S, X), t.outputs(X), rtol=0, atol=1e-14)
    assert np.count_nonzero(W) == 3 * 5


def test_augmented_round_trip_and_outputs():
    t = draw_teacher(d=30, K=3, r_star=5, seed=2)
    S = draw_student_supports(t, r=9, seed=3)
    W = np.random.default_rng(1).standard_normal(S.shape)
    A, mask = to_augmented(W, S, 30)
    assert A.shape == (30, 3) and mask.sum() == 27
    assert np.all(A[~mask] == 0)
    W2, S2 = to_compact(A, mask)
    np.testing.assert_array_equal(S2, S)
    np.testing.assert_array_equal(W2, W)
    X = np.random.default_rng(0).standard_normal((20, 30))
    dense = np.maximum(X @ A, 0).mean(axis=1)
    np.testing.assert_allclose(network_outputs(W, S, X), dense, atol=1e-14)
    np.testing.assert_array_equal(supports_from_mask(mask), S)


def test_noise_level_is_relative_to_rms_output():
    t = draw_teacher(d=20, K=3, r_star=5, seed=0)
    ds = make_dataset(t, N=20000, seed=1, noise_level=0.1)
    e_y = np.sqrt(np.mean(ds.y_clean**2))
    assert ds.noise_sigma == pytest.approx(0.1 * e_y)
    assert np.std(ds.y - ds.y_clean) == pytest.approx(0.1 * e_y, rel=0.03)
    clean = make_dataset(t, N=100, seed=1)
    np.testing.assert_array_equal(clean.y, clean.y_clean)


def test_same_seed_same_numbers():
    a = make_dataset(draw_teacher(20, 3, 5, seed=7), N=10, seed=8, noise_level=0.2)
    b = make_dataset(draw_teacher(20, 3, 5, seed=7), N=10, seed=8, noise_level=0.2)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)


def test_validate_supports_sorts_rows():
    S = validate_supports([[3, 1, 2], [0, 5, 4]], d=6)
    np.testing.assert_array_equal(S, [[1, 2, 3], [0, 4, 5]])

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf import timeline
from stpn_tf.errors import StpnError


def test_seconds_per_snippet():
    # I3D on 16-frame stacks: 16 / 25 = 0.64 s at 25 fps, 16 / 10 = 1.6 s at 10 fps.
    assert timeline.seconds_per_snippet(25, 16) == pytest.approx(0.64)
    assert timeline.seconds_per_snippet(10.0, 16) == pytest.approx(1.6)
    with pytest.raises(StpnError, match="fps"):
        timeline.seconds_per_snippet(0, 16)


def test_eval_grid_indices_by_hand():
    # L = 3 real snippets on a T = 4 grid: floor([0, 3, 6, 9] / 4) = [0, 0, 1, 2].
    np.testing.assert_array_equal(timeline.eval_grid_indices(3, 4), [0, 0, 1, 2])
    # L = 800 on T = 400: every second snippet.
    np.testing.assert_array_equal(timeline.eval_grid_indices(800, 400), np.arange(0, 800, 2))
    # L = T: identity.
    np.testing.assert_array_equal(timeline.eval_grid_indices(400), np.arange(400))
    with pytest.raises(StpnError, match="at least one snippet"):
        timeline.eval_grid_indices(0)


def test_eval_grid_indices_match_float_formula_and_tf():
    lengths = np.array([1, 2, 7, 99, 400, 401, 1234, 5633])
    graph = timeline.eval_grid_indices_tf(tf.constant(lengths, tf.int32), 400).numpy()
    for row, num_snippets in zip(graph, lengths):
        expected = np.floor(np.arange(400) * num_snippets / 400).astype(np.int64)
        np.testing.assert_array_equal(timeline.eval_grid_indices(int(num_snippets)), expected)
        np.testing.assert_array_equal(row, expected)
        assert row.max() <= num_snippets - 1


def test_grid_to_seconds_by_hand():
    # Grid of 400 positions over L = 800 snippets of 0.64 s: coordinate 10 -> 10 * 800 / 400 * 0.64 = 12.8 s.
    assert timeline.grid_to_seconds(10, length=400, num_snippets=800, seconds_per_snippet=0.64) == pytest.approx(12.8)
    # The end of the grid is the end of the last snippet: 400 * 2 * 0.64 = 512 s ...
    assert timeline.grid_to_seconds(400, length=400, num_snippets=800, seconds_per_snippet=0.64) == pytest.approx(512)
    # ... clipped to a shorter annotated duration, and never below 0.
    assert timeline.grid_to_seconds(400, length=400, num_snippets=800, seconds_per_snippet=0.64,
                                    duration=500.0) == pytest.approx(500)
    assert timeline.grid_to_seconds(-1, length=400, num_snippets=800, seconds_per_snippet=0.64) == 0.0


def test_grid_to_seconds_tf_agrees_with_numpy():
    rng = np.random.default_rng(0)
    grid = rng.uniform(-5, 420, size=(6, 5, 2))
    length = rng.integers(1, 401, size=6)
    num_snippets = rng.integers(1, 3000, size=6)
    sps = rng.uniform(0.3, 2.0, size=6).astype(np.float32)
    duration = (num_snippets * sps * rng.uniform(0.9, 1.0, size=6)).astype(np.float32)
    col = lambda x: x[:, None, None]  # noqa: E731
    for dur in (None, duration):
        expected = timeline.grid_to_seconds(grid, length=col(length), num_snippets=col(num_snippets),
                                            seconds_per_snippet=col(sps),
                                            duration=None if dur is None else col(dur))
        got = timeline.grid_to_seconds_tf(tf.constant(grid), length=tf.constant(col(length)),
                                          num_snippets=tf.constant(col(num_snippets)),
                                          seconds_per_snippet=tf.constant(col(sps)),
                                          duration=None if dur is None else tf.constant(col(dur)))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_interpolated_run_to_grid():
    # Positions 48..71 at k = 24 are grid coordinates 2.0 .. 2.958; the run covers [2, 3].
    assert timeline.interpolated_run_to_grid(48, 71, 24) == (2.0, 3.0)
    start, end = timeline.interpolated_run_to_grid(tf.constant([48, 0]), tf.constant([71, 0]), 24)
    np.testing.assert_array_equal(start.numpy(), [2.0, 0.0])
    np.testing.assert_array_equal(end.numpy(), [3.0, 1.0 / 24])

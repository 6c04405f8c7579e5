"""stpn_tf.localize.timeline: the one place grid positions become seconds (numpy and graph)."""

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.localize import timeline


def test_seconds_per_snippet():
    # I3D on 16-frame stacks: 16 / 25 = 0.64 s at 25 fps, 16 / 10 = 1.6 s at 10 fps.
    assert timeline.seconds_per_snippet(25, 16) == pytest.approx(0.64)
    assert timeline.seconds_per_snippet(10.0, 16) == pytest.approx(1.6)
    with pytest.raises(StpnError, match="fps"):
        timeline.seconds_per_snippet(0, 16)


def test_grid_to_seconds_by_hand():
    # Grid of 400 positions over L = 800 snippets of 0.64 s: coordinate 10 -> 10 * 800 / 400 * 0.64 = 12.8 s.
    assert timeline.grid_to_seconds(10, length=400, num_snippets=800, seconds_per_snippet=0.64) == pytest.approx(12.8)
    # The end of the grid is the end of the last snippet: 400 * 2 * 0.64 = 512 s ...
    assert timeline.grid_to_seconds(400, length=400, num_snippets=800, seconds_per_snippet=0.64) == pytest.approx(512)
    # ... clipped to a shorter annotated duration, and never below 0.
    assert timeline.grid_to_seconds(400, length=400, num_snippets=800, seconds_per_snippet=0.64,
                                    duration=500.0) == pytest.approx(500)
    assert timeline.grid_to_seconds(-1, length=400, num_snippets=800, seconds_per_snippet=0.64) == 0.0


def test_positions_to_seconds_by_hand():
    # x24 interpolation on a 400 grid over 800 snippets of 0.64 s: position 48 is grid coordinate 2, that is
    # 2 * 800 / 400 * 0.64 = 2.56 s; the run [48, 71] ends at position 72 = coordinate 3 = 3.84 s.
    seconds = timeline.positions_to_seconds(np.array([48, 72]), interpolation=24, length=400, num_snippets=800,
                                            seconds_per_snippet=0.64)
    np.testing.assert_allclose(seconds, [2.56, 3.84], rtol=1e-12)
    # Clipped to the duration.
    assert timeline.positions_to_seconds(400 * 24, interpolation=24, length=400, num_snippets=800,
                                         seconds_per_snippet=0.64, duration=100.0) == 100.0


def test_positions_to_seconds_tf_equals_numpy_eager_graph_xla():
    rng = np.random.default_rng(0)
    positions = rng.integers(-5, 400 * 24, size=(6, 5, 2)).astype(np.float64)
    length = rng.integers(1, 401, size=6)
    num_snippets = rng.integers(1, 3000, size=6)
    sps = rng.uniform(0.3, 2.0, size=6).astype(np.float32)
    duration = (num_snippets * sps * rng.uniform(0.9, 1.0, size=6)).astype(np.float32)
    col = lambda x: x[:, None, None]  # noqa: E731

    def graph(p, n, s, d, length):
        return timeline.positions_to_seconds_tf(p, interpolation=24, length=length, num_snippets=n,
                                                seconds_per_snippet=s, duration=d)

    # NaN entries: not given (L * seconds_per_snippet), the rest clip; numpy and graph alike.
    mixed = np.where(np.arange(6) % 2 == 0, np.nan, duration).astype(np.float32)
    expected = {}
    for name, dur in (("none", None), ("given", duration), ("nan", mixed)):
        expected[name] = timeline.positions_to_seconds(positions, interpolation=24, length=col(length),
                                                 num_snippets=col(num_snippets), seconds_per_snippet=col(sps),
                                                 duration=None if dur is None else col(dur))
        args = (tf.constant(positions), tf.constant(col(num_snippets)), tf.constant(col(sps)),
                None if dur is None else tf.constant(col(dur)), tf.constant(col(length)))
        for fn in (graph, tf.function(graph), tf.function(graph, jit_compile=True)):
            np.testing.assert_array_equal(fn(*args).numpy(), expected[name])
    # The NaN rows equal the rows given no duration, the others the rows given theirs.
    none, given, nan = expected["none"], expected["given"], expected["nan"]
    np.testing.assert_array_equal(nan[0::2], none[0::2])
    np.testing.assert_array_equal(nan[1::2], given[1::2])
    assert not np.array_equal(none, given)  # the durations given clip somewhere


def test_nan_duration_by_hand():
    # Position 9600 (coordinate 400) over 800 snippets of 0.64 s is 512 s; NaN clips at L * sps = 512 s, 100 at 100.
    seconds = timeline.positions_to_seconds(np.array([9600.0, 9600.0]), interpolation=24, length=400,
                                            num_snippets=800, seconds_per_snippet=0.64,
                                            duration=np.array([np.nan, 100.0]))
    np.testing.assert_allclose(seconds, [512.0, 100.0], rtol=1e-12)

"""stpn_tf.data.grid: the test grid, by hand, against the float formula, eagerly, in tf.data and in a graph."""

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.data import grid
from stpn_tf.data.grid import GridConfig
from stpn_tf.core.errors import StpnError


def _grid_indices(lengths, length):
    """eval_grid_indices_tf for a batch of real snippet counts, as numpy."""
    return grid.eval_grid_indices_tf(tf.constant(lengths, tf.int32), length).numpy()


def test_eval_grid_indices_by_hand():
    # L = 3 real snippets on a T = 4 grid: floor([0, 3, 6, 9] / 4) = [0, 0, 1, 2].
    np.testing.assert_array_equal(_grid_indices([3], 4)[0], [0, 0, 1, 2])
    # L = 800 on T = 400: every second snippet.
    np.testing.assert_array_equal(_grid_indices([800], 400)[0], np.arange(0, 800, 2))
    # L = T: identity (the default grid length is 400).
    np.testing.assert_array_equal(grid.eval_grid_indices_tf(tf.constant([400])).numpy()[0], np.arange(400))


def test_eval_grid_indices_match_float_formula():
    lengths = np.array([1, 2, 7, 99, 400, 401, 1234, 5633])
    for row, num_snippets in zip(_grid_indices(lengths, 400), lengths):
        expected = np.floor(np.arange(400) * num_snippets / 400).astype(np.int64)
        np.testing.assert_array_equal(row, expected)
        assert row.max() <= num_snippets - 1


def _batch():
    # Row value = 10 * video + snippet index, padding rows -1: the sampled values show which snippet was taken.
    num_snippets = np.array([3, 5, 0], np.int32)
    features = np.full((3, 6, 2), -1.0, np.float32)
    for v, n in enumerate(num_snippets):
        features[v, :n] = (10 * v + np.arange(n))[:, None]
    return features, num_snippets


def test_sample_grid_by_hand():
    features, num_snippets = _batch()
    sampled, mask, lengths = grid.sample_grid(tf.constant(features), tf.constant(num_snippets), GridConfig(length=4))
    # Video 0 (L = 3): snippets [0, 0, 1, 2]; video 1 (L = 5): floor([0, 5, 10, 15] / 4) = [0, 1, 2, 3].
    np.testing.assert_array_equal(sampled.numpy()[0, :, 0], [0, 0, 1, 2])
    np.testing.assert_array_equal(sampled.numpy()[1, :, 0], [10, 11, 12, 13])
    # The empty video has no valid positions and a zero mask.
    np.testing.assert_array_equal(lengths.numpy(), [4, 4, 0])
    np.testing.assert_array_equal(mask.numpy(), [[1] * 4, [1] * 4, [0] * 4])
    # all_snippets: the features themselves, masked past each video's length.
    same, mask, lengths = grid.sample_grid(tf.constant(features), tf.constant(num_snippets),
                                           GridConfig(all_snippets=True))
    np.testing.assert_array_equal(same.numpy(), features)
    np.testing.assert_array_equal(lengths.numpy(), num_snippets)
    np.testing.assert_array_equal(mask.numpy().sum(axis=1), num_snippets)


def test_sample_grid_eager_equals_dataset_map_and_function():
    features, num_snippets = _batch()
    config = GridConfig(length=4)
    eager = grid.sample_grid(tf.constant(features), tf.constant(num_snippets), config)
    in_graph = tf.function(lambda f, n: grid.sample_grid(f, n, config))(tf.constant(features), tf.constant(num_snippets))
    mapped = next(iter(tf.data.Dataset.from_tensors((features, num_snippets)).map(
        lambda f, n: grid.sample_grid(f, n, config))))
    for a, b, c in zip(eager, in_graph, mapped):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(a.numpy(), c.numpy())


def test_grid_config_checks():
    assert GridConfig().grid_length == 400 and GridConfig(all_snippets=True).grid_length is None
    with pytest.raises(StpnError, match="positive integer"):
        GridConfig(length=0)

"""The Localizer inside a graph (stpn_tf.localize.serving): bounds derived from the data as graph ops.

Inside a graph (the export's SavedModel, Beam) the output must be byte-identical to the configured graph
and to the eager Localizer (`stpn localize`), whichever bucket, branch or fallback runs.
"""

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.core.buckets import bucket
from stpn_tf.localize import Localizer, LocalizerConfig, localize
from stpn_tf.localize import serving
from tests.helpers.localize import KEYS, random_streams

TIE = LocalizerConfig(interpolation=1, max_detections=3, max_components_per_class=8)


def in_graph(localizer: Localizer, rgb, flow, **common):
    """`localizer` called inside a tf.function (as the export calls it), outputs as numpy."""
    tensors = lambda x: {k: tf.constant(v) for k, v in x.items()}  # noqa: E731
    args = {k: (None if v is None else tf.constant(v)) for k, v in common.items()}
    function = tf.function(lambda r, f, a: localizer(r, f, **a), autograph=False)  # as the export traces it
    return {key: value.numpy() for key, value in function(tensors(rgb), tensors(flow), args).items()}


def assert_identical(got, expected):
    for key in KEYS:
        np.testing.assert_array_equal(got[key], np.asarray(expected[key]), err_msg=key)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    rgb, flow = random_streams(rng, 5, 24, 4)
    rgb["probabilities"][0] = .9   # every class of video 0 passes: more rows than the others
    rgb["probabilities"][3] = 0.   # video 3 passes nowhere in rgb: only flow's classes
    flow["probabilities"][3] = 0.
    common = dict(lengths=np.array([24, 10, 0, 24, 17], np.int32), num_snippets=np.array([24, 30, 5, 12, 17], np.int32),
                  seconds_per_snippet=np.array([.64, .5, 1., .64, 2.], np.float32))
    return rgb, flow, common


@pytest.mark.parametrize("kwargs,jit", [
    # XLA: slot buckets 8 and M (tf.switch_case over two compiled row functions); durations clip.
    (dict(interpolation=2, max_detections=40, max_components_per_class=12), True),
    # Q < C, several thresholds, one proposing stream, normalised attention, soft NMS, a K cut.
    (dict(interpolation=3, max_detections=5, max_components_per_class=12, max_classes_per_video=2,
          proposal_thresholds=(.05, .2), proposal_streams="flow", proposal_signal="attention", normalize=True,
          nms="soft"), False),
    # OIC scoring, three slot buckets (8, 16, M), class threshold 0 (every pair a row).
    (dict(interpolation=2, max_detections=40, max_components_per_class=20, scoring="oic", class_threshold=0.), False),
    # One slot bucket (M = 6 <= 8: only the configured M, no tf.switch_case); min score, N per video.
    (dict(interpolation=1, max_detections=12, max_components_per_class=6, min_score=.05, detections_per_video=3),
     False),
])
def test_in_graph_is_identical_to_the_configured_graph_and_the_eager_localizer(data, kwargs, jit):
    rgb, flow, common = data
    config = LocalizerConfig(**kwargs)
    durations = np.array([15., 14., 5., 7., 30.], np.float32) if jit else None
    got = in_graph(Localizer(config, jit_compile=jit), rgb, flow, durations=durations, **common)
    configured = in_graph(Localizer(config, jit_compile=jit, derive_in_graph=False), rgb, flow, durations=durations,
                          **common)
    eager = Localizer(config, jit_compile=jit)(rgb, flow, durations=durations, **common)
    assert_identical(got, configured)
    assert_identical(got, eager)
    assert got["num_detections"][2] == 0 and got["num_detections"].sum() > 0
    if config.max_components_per_class in (12, 20) and config.max_detections == 40:
        # A branch below M runs (8 slots, 16 slots): its rows are widened to M's width for the one merge.
        from stpn_tf.localize.bounds import component_count_bound
        assert component_count_bound(rgb, flow, common["lengths"], config).max() <= 16


def test_in_graph_k_cut_tie_falls_back_to_the_configured_bounds():
    # The float32 tie across the K cut of test_localize: the merge reports it and tf.cond runs `localize`.
    rgb, flow = ({"attention": np.ones((1, 8), np.float32), "tcam": np.zeros((1, 8, 2), np.float32),
                  "probabilities": np.full((1, 2), .9, np.float32)} for _ in range(2))
    for stream in (rgb, flow):
        stream["attention"][0, 1::2] = 0.
    common = dict(lengths=np.array([8], np.int32), num_snippets=np.array([8], np.int32),
                  seconds_per_snippet=np.array([1.], np.float32))
    got = in_graph(Localizer(TIE, jit_compile=False), rgb, flow, **common)
    assert_identical(got, localize(rgb, flow, config=TIE, **common))
    assert got["num_detections"][0] == 3


def test_in_graph_overflow_falls_back_to_the_configured_bounds(data, monkeypatch):
    # A component bound that underestimates: the 8-slot row function overflows and tf.cond runs `localize`.
    rgb, flow, common = data
    config = LocalizerConfig(interpolation=2, max_detections=60, max_components_per_class=12, class_threshold=0.)
    monkeypatch.setattr(serving, "row_component_bound", lambda rows, *args: tf.zeros([tf.shape(rows[0]["tcam"])[0], 2],
                                                                                     tf.int64))
    localizer = Localizer(config, jit_compile=False)
    got = in_graph(localizer, rgb, flow, **common)
    assert_identical(got, localize(rgb, flow, config=config, **common))
    assert list(localizer._rows) == [8, None]  # both branches traced; the 8-slot one ran and overflowed
    from stpn_tf.localize.bounds import component_count_bound
    assert component_count_bound(rgb, flow, common["lengths"], config).max() > 8  # so it did overflow


def test_row_component_bound_matches_numpy(data):
    from stpn_tf.localize.bounds import component_count_bound

    rgb, flow, common = data
    for config in (LocalizerConfig(interpolation=3, class_threshold=0.),
                   LocalizerConfig(interpolation=2, normalize=True, proposal_thresholds=(.1, .3),
                                   proposal_streams="rgb", class_threshold=.2)):
        rows = [{"attention": s["attention"], "tcam": s["tcam"][:, :, 1:2], "probabilities": s["probabilities"][:, 1:2]}
                for s in (rgb, flow)]
        expected = component_count_bound(*rows, common["lengths"], config)[:, :, 0]              # [B, 2]
        got = serving.row_component_bound([{k: tf.constant(v) for k, v in r.items()} for r in rows],
                                          tf.constant(common["lengths"]), config)
        np.testing.assert_array_equal(got, expected)
        assert expected.max() > 0


def test_bucket_lookups_match_core_buckets():
    for n in (0, 1, 15, 16, 17, 20, 21, 255, 1000, 5000):
        table = serving.buckets_up_to(2 ** 20, 16, steps=4)
        assert int(serving.first_bucket_at_least(tf.constant(n), table)) == bucket(n, 16, steps=4)
    for n, power in ((1, 1), (2, 2), (3, 2), (436, 256), (512, 512), (2 ** 22, 2 ** 22)):
        assert int(serving.largest_power_of_two_at_most(tf.constant(n))) == power


def test_merge_rows_by_hand():
    # Video 0: class 0 found .9 and .5, class 2 found .7; video 1: class 1 found .8. K = 2 cuts video 0's .5.
    count = tf.constant([2, 1, 1])
    score64 = tf.constant([[.9, .5], [.7, 0.], [.8, 0.]], tf.float64)
    segments = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 2, 2))
    outputs, tie = serving.merge_rows(count, tf.cast(score64, tf.float32), segments, score64,
                                      tf.constant([0, 0, 1]), tf.constant([0, 2, 1]), batch=tf.constant(2),
                                      max_detections=2)
    assert not bool(tie)
    np.testing.assert_array_equal(outputs["detection_classes"], [[0, 2], [1, -1]])
    np.testing.assert_allclose(outputs["detection_scores"], [[.9, .7], [.8, 0.]])
    np.testing.assert_array_equal(outputs["detection_segments"], [[[0, 1], [4, 5]], [[8, 9], [0, 0]]])
    np.testing.assert_array_equal(outputs["num_detections"], [2, 1])
    # detections_per_video 1: each video's best one.
    outputs, _ = serving.merge_rows(count, tf.cast(score64, tf.float32), segments, score64, tf.constant([0, 0, 1]),
                                    tf.constant([0, 2, 1]), batch=tf.constant(2), max_detections=2,
                                    detections_per_video=1)
    np.testing.assert_array_equal(outputs["detection_classes"], [[0, -1], [1, -1]])
    np.testing.assert_array_equal(outputs["num_detections"], [1, 1])

"""Graph localization vs the numpy reference, eagerly, under tf.function and under XLA, plus hand cases."""

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.localize import Localizer, LocalizerConfig, localize
from stpn_tf.localize.bounds import component_count_bound
from stpn_tf.localize.reference import connected_components, interpolate, localize_video, min_max_normalized

from tests.helpers.localize import KEYS, check, const_tcam, make_config, random_streams, streams


def test_tiny_example_by_hand():
    # T = 5, C = 2, k = 2, L = 10 snippets of 0.64 s, alpha = 0.5.
    # RGB: attention [0, .4, .4, 0, .3]; tcam class 0 = 0, so psi = lambda * sigmoid(0) = [0, .2, .2, 0, .15].
    # Flow: tcam class 0 = 4, so the RGB score sequence is lambda * (.5 * 0 + .5 * 4) = [0, .8, .8, 0, .6].
    # Flow's class 0 probability .05 < .1: flow proposes nothing. Class 1 has p = .09 in both streams:
    # rejected although its psi would pass.
    # Interpolated psi at j / 2, j = 0..9 (j = 9 extrapolates .15 + .5 * (.15 - 0)):
    #   [0, .1, .2, .2, .2, .1, 0, .075, .15, .225] > .05 -> runs [1, 5] and [7, 9].
    # Interpolated score: [0, .4, .8, .8, .8, .4, 0, .3, .6, .9]
    #   run [1, 5]: (.4 + .8 + .8 + .8 + .4) / 5 = .64; run [7, 9]: (.3 + .6 + .9) / 3 = .6
    # Grid intervals [1/2, 6/2] = [.5, 3] and [7/2, 10/2] = [3.5, 5]; seconds = g * 10 / 5 * .64 = 1.28 g:
    #   [.64, 3.84] and [4.48, 6.4]. They do not overlap: both kept.
    att_rgb = [[0, .4, .4, 0, .3]]
    tcam_rgb = np.concatenate([const_tcam(0, 5), const_tcam(5, 5)], -1)
    tcam_flow = np.concatenate([const_tcam(4, 5), const_tcam(0, 5)], -1)
    rgb, flow = streams(att_rgb, tcam_rgb, [[.5, .09]], np.ones((1, 5)), tcam_flow, [[.05, .09]])
    check(rgb, flow, [5], [10], [.64], interpolation=2, max_detections=5,
          expected=[[(0, .64, .64, 3.84), (0, .6, 4.48, 6.4)]])


def test_no_class_passes_threshold():
    rng = np.random.default_rng(3)
    rgb, flow = streams(rng.uniform(.5, 1, (2, 6)), rng.normal(2, 1, (2, 6, 3)), np.full((2, 3), .05),
                        rng.uniform(.5, 1, (2, 6)), rng.normal(2, 1, (2, 6, 3)), np.full((2, 3), .0999))
    out = check(rgb, flow, [6, 4], [6, 4], [1., 1.], interpolation=2, max_detections=5, expected=[[], []])
    np.testing.assert_array_equal(out["num_detections"], [0, 0])


def test_class_threshold_is_inclusive():
    # p = .25 with class_threshold = .25 (exact in binary) keeps the class; psi = .8 * sigmoid(1) > .05
    # everywhere, so RGB proposes the whole video with score .8 * (.5 * 1 + .5 * 1) = .8.
    rgb, flow = streams(np.full((1, 3), .8), const_tcam(1, 3), [[.25]], np.full((1, 3), .8),
                        const_tcam(1, 3), [[.2499]])
    check(rgb, flow, [3], [3], [1.], class_threshold=.25, interpolation=1, max_detections=5,
          expected=[[(0, .8, 0., 3.)]])


@pytest.mark.parametrize("nms_threshold,expected", [
    # RGB: lambda .8, a 1 -> score .8 * (.5 * 1 + .5 * 3) = 1.6; flow: lambda .6 -> 1.2. Both cover the whole
    # video (psi = .8 sigmoid(1) = .58, .6 sigmoid(3) = .57 > .05); grid [0, 6] -> [0, 12 * .5] = [0, 6] s,
    # clipped to the 5 s duration. tIoU 1 > .5: flow suppressed ...
    (.5, [(0, 1.6, 0., 5.)]),
    # ... but not when the threshold is 1 (suppression needs tIoU strictly greater).
    (1., [(0, 1.6, 0., 5.), (0, 1.2, 0., 5.)]),
])
def test_everything_above_threshold(nms_threshold, expected):
    rgb, flow = streams(np.full((1, 6), .8), const_tcam(1, 6), [[.9]], np.full((1, 6), .6), const_tcam(3, 6),
                        [[.9]])
    check(rgb, flow, [6], [12], [.5], durations=[5.], interpolation=24, nms_threshold=nms_threshold,
          max_detections=5, expected=[expected])


def test_max_classes_per_video():
    # Three classes, all with psi above threshold everywhere (as in the test above: RGB score 1.6, flow
    # 1.2, whole video = [0, 12 * .5] = [0, 6] s). Passing probabilities: class 0 max(.5, .95) = .95,
    # class 1 .9 (RGB only), class 2 .7 (RGB only). With Q = 2 only classes 0 and 1 are localized; flow's
    # class-0 proposal is suppressed by RGB's (tIoU 1). Equal scores: class 0 first.
    tcam_rgb, tcam_flow = np.ones((1, 6, 3)), np.full((1, 6, 3), 3.)
    rgb, flow = streams(np.full((1, 6), .8), tcam_rgb, [[.5, .9, .7]], np.full((1, 6), .6), tcam_flow,
                        [[.95, 0., 0.]])
    check(rgb, flow, [6], [12], [.5], interpolation=1, max_detections=5, max_classes_per_video=2,
          expected=[[(0, 1.6, 0., 6.), (1, 1.6, 0., 6.)]])
    check(rgb, flow, [6], [12], [.5], interpolation=1, max_detections=5, max_classes_per_video=None,
          expected=[[(0, 1.6, 0., 6.), (1, 1.6, 0., 6.), (2, 1.6, 0., 6.)]])


def test_components_touching_both_ends():
    # RGB attention [.4, 0, 0, 0, .4], a_rgb = 0 -> psi = [.2, 0, 0, 0, .2]; k = 2:
    #   j:   0   1   2  3  4  5  6   7   8   9 (= .2 + .5 * .2, extrapolated)
    #   psi .2  .1   0  0  0  0  0  .1  .2  .3   -> runs [0, 1] and [7, 9]
    # a_flow = 2 -> score = lambda * 1 = psi * 2: run [0, 1]: (.4 + .2) / 2 = .3; run [7, 9]: (.2+.4+.6)/3 = .4
    # L = 5, length 5, 1 s snippets: seconds = grid: [0, 1] and [3.5, 5].
    rgb, flow = streams([[.4, 0, 0, 0, .4]], const_tcam(0, 5), [[.9]], np.ones((1, 5)), const_tcam(2, 5), [[0.]])
    check(rgb, flow, [5], [5], [1.], interpolation=2, max_detections=5,
          expected=[[(0, .4, 3.5, 5.), (0, .3, 0., 1.)]])


def test_one_snippet_components():
    # k = 1: psi = .5 * [.4, 0, .3, 0, .2] -> three single-position runs; score = lambda (a_flow = 2).
    rgb, flow = streams([[.4, 0, .3, 0, .2]], const_tcam(0, 5), [[.9]], np.ones((1, 5)), const_tcam(2, 5), [[0.]])
    check(rgb, flow, [5], [5], [1.], interpolation=1, max_detections=5,
          expected=[[(0, .4, 0., 1.), (0, .3, 2., 3.), (0, .2, 4., 5.)]])
    # k = 3, a single interpolated position: psi = .5 * [0, .12, 0] = [0, .06, 0]; at j = 2, 3, 4 the
    # interpolated psi is .04, .06, .04 -> only j = 3 passes: grid [1, 4/3]; L = 3, 1 s snippets.
    # Score there = lambda = .12.
    rgb, flow = streams([[0, .12, 0]], const_tcam(0, 3), [[.9]], np.ones((1, 3)), const_tcam(2, 3), [[0.]])
    check(rgb, flow, [3], [3], [1.], interpolation=3, max_detections=5, expected=[[(0, .12, 1., 4. / 3)]])


def test_short_video_on_the_400_grid_by_hand():
    # L = 100 real snippets sampled onto T = 400 (each snippet repeated 4 times), 0.64 s snippets,
    # so seconds = g * 100 / 400 * .64 = .16 g. RGB lambda = .35 on grid positions 40..79, 0 elsewhere;
    # a_rgb = 0 -> psi = .175 there. k = 24:
    #   rising edge in [39, 40]: psi = .175 r / 24 > .05 <=> r > 6.86 -> first position 39 * 24 + 7 = 943
    #   falling edge in [79, 80]: psi = .175 (1 - r / 24) > .05 <=> r < 17.14 -> last 79 * 24 + 17 = 1913
    #   grid [943 / 24, 1914 / 24] = [39.2917, 79.75] -> seconds [6.28667, 12.76]
    # Score (a_flow = 2 -> score = lambda, linear like psi):
    #   rising:  .35 / 24 * (7 + ... + 23) = .35 / 24 * 255 = 3.71875
    #   plateau: positions 960 .. 1896 (grid 40 .. 79, 937 positions) at .35 = 327.95
    #   falling (r = 1..17): .35 * (17 - (1 + ... + 17) / 24) = .35 * (17 - 6.375) = 3.71875
    #   mean = 335.3875 / 971 (= 1913 - 943 + 1)
    attention = np.zeros((1, 400))
    attention[0, 40:80] = .35
    rgb, flow = streams(attention, const_tcam(0, 400), [[.9]], np.ones((1, 400)), const_tcam(2, 400), [[0.]])
    check(rgb, flow, [400], [100], [.64], interpolation=24, max_detections=5,
          expected=[[(0, 335.3875 / 971, 943 / 24 * .16, 1914 / 24 * .16)]])


def test_padded_batch_ignores_positions_past_length():
    # T = 8, k = 1. Video 0: full length, L = 4 snippets (shorter than the grid), lambda .4 on 2..5:
    #   grid [2, 6] -> seconds g * 4 / 8 * .64 = [.64, 1.92]; score = lambda = .4.
    # Video 1: valid length 5 (all-snippets mode, L = 5), lambda .4 on 3..4 and .9 in the padding 5..7,
    #   which must be ignored: grid [3, 5] -> seconds g * 5 / 5 * .64 = [1.92, 3.2].
    attention = np.array([[0, 0, .4, .4, .4, .4, 0, 0], [0, 0, 0, .4, .4, .9, .9, .9]])
    tcam_zero = np.zeros((2, 8, 1))
    rgb, flow = streams(attention, tcam_zero, [[.9], [.9]], np.ones((2, 8)), tcam_zero + 2, [[0.], [0.]])
    check(rgb, flow, [8, 5], [4, 5], [.64, .64], interpolation=1, max_detections=5,
          expected=[[(0, .4, .64, 1.92)], [(0, .4, 1.92, 3.2)]])


LAMBDAS = [.5, 0, .9, 0, .3, 0, .8, 0, .6, 0, .4, 0]


def test_more_components_than_max_detections():
    # k = 1, six single-position runs with score = lambda (a_flow = 2); L = 12, 1 s snippets.
    # max_detections = 4 keeps the four best: .9 [2, 3], .8 [6, 7], .6 [8, 9], .5 [0, 1].
    rgb, flow = streams([LAMBDAS], const_tcam(0, 12), [[.9]], np.ones((1, 12)), const_tcam(2, 12), [[0.]])
    out = check(rgb, flow, [12], [12], [1.], interpolation=1, max_detections=4,
                expected=[[(0, .9, 2., 3.), (0, .8, 6., 7.), (0, .6, 8., 9.), (0, .5, 0., 1.)]])
    assert out["num_detections"][0] == 4


def test_more_components_than_max_components_per_class():
    # The same six runs; a bound of 3 per stream and class keeps the three best before NMS.
    rgb, flow = streams([LAMBDAS], const_tcam(0, 12), [[.9]], np.ones((1, 12)), const_tcam(2, 12), [[0.]])
    check(rgb, flow, [12], [12], [1.], interpolation=1, max_detections=10, max_components_per_class=3,
          expected=[[(0, .9, 2., 3.), (0, .8, 6., 7.), (0, .6, 8., 9.)]])


@pytest.mark.parametrize("swap", [False, True])
def test_nms_tie_rgb_before_flow(swap):
    # a = 1 in both streams (psi = lambda * .73, score = lambda * 1). RGB run [0, 3] and flow run [1, 4],
    # both with score exactly .5; tIoU = 3 / 5 = .6 > .5. Tie -> RGB goes first and suppresses flow.
    first, second = [[.5, .5, .5, .5, 0, 0]], [[0, .5, .5, .5, .5, 0]]
    if swap:
        first, second = second, first
    rgb, flow = streams(first, const_tcam(1, 6), [[.9]], second, const_tcam(1, 6), [[.9]])
    expected = (0, .5, 1., 5.) if swap else (0, .5, 0., 4.)
    check(rgb, flow, [6], [6], [1.], interpolation=1, max_detections=5, expected=[[expected]])


def test_ties_in_truncation_class_order_and_iou_at_threshold():
    # Two classes with identical inputs; RGB runs [0, 0] and [2, 2] both scored .5 (lambda .5, a = 1).
    # With M = 1 the earlier run wins the tie; the final order puts class 0 before class 1.
    tcam = np.ones((1, 4, 2))
    rgb, flow = streams([[.5, 0, .5, 0]], tcam, [[.9, .9]], np.ones((1, 4)), tcam, [[0., 0.]])
    check(rgb, flow, [4], [4], [1.], interpolation=1, max_detections=5, max_components_per_class=1,
          expected=[[(0, .5, 0., 1.), (1, .5, 0., 1.)]])
    # Without the bound both runs survive; equal scores: class 0 first, then the earlier start.
    check(rgb, flow, [4], [4], [1.], interpolation=1, max_detections=5,
          expected=[[(0, .5, 0., 1.), (0, .5, 2., 3.), (1, .5, 0., 1.), (1, .5, 2., 3.)]])
    # tIoU exactly .5 does not suppress: RGB [0, 1] (score .6) vs flow [0, 3] (score .5): 2 / 4 = .5.
    rgb, flow = streams([[.6, .6, 0, 0, 0]], const_tcam(1, 5), [[.9]], [[.5, .5, .5, .5, 0]], const_tcam(1, 5),
                        [[.9]])
    check(rgb, flow, [5], [5], [1.], interpolation=1, max_detections=5,
          expected=[[(0, .6, 0., 2.), (0, .5, 0., 4.)]])


def test_empty_video_gives_no_detections():
    rgb, flow = streams(np.ones((2, 3)), np.ones((2, 3, 1)), [[.9], [.9]], np.ones((2, 3)), np.ones((2, 3, 1)),
                        [[.9], [.9]])
    out = check(rgb, flow, [0, 3], [0, 3], [1., 1.], interpolation=2, max_detections=5)
    np.testing.assert_array_equal(out["num_detections"], [0, 1])


# --------------------------------------------------------------------------- random agreement

CONFIGS = [
    dict(b=6, t=9, c=3, interpolation=1, max_components_per_class=3, max_detections=6, nms_threshold=.5),
    dict(b=6, t=17, c=2, interpolation=3, max_components_per_class=4, max_detections=12, nms_threshold=.3),
    dict(b=6, t=12, c=4, interpolation=24, max_components_per_class=8, max_detections=40, nms_threshold=.7),
    dict(b=4, t=3, c=2, interpolation=5, max_components_per_class=6, max_detections=3, nms_threshold=.5),
    dict(b=6, t=10, c=5, interpolation=2, max_components_per_class=4, max_detections=10, nms_threshold=.5,
         max_classes_per_video=2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"t{c['t']}k{c['interpolation']}c{c['c']}")
def test_random_agreement_with_reference(config):
    config = dict(config)
    b, t, c = config.pop("b"), config.pop("t"), config.pop("c")
    for seed in range(6):
        rng = np.random.default_rng(seed)
        rgb, flow = random_streams(rng, b, t, c)
        lengths = rng.integers(1, t + 1, b)
        lengths[0] = t
        num_snippets = np.where(rng.uniform(size=b) < .5, lengths, rng.integers(1, 2000, b))
        # Videos under 2,048 s: float32 seconds then resolve 1.2e-4 s (half an ulp is 6e-5 s).
        sps = rng.uniform(.3, 1., b).astype(np.float32)
        # Clip at the annotated duration for some videos, at L * seconds_per_snippet for the others.
        durations = (num_snippets * sps * np.where(rng.uniform(size=b) < .5, rng.uniform(.95, 1., b), 1.))
        check(rgb, flow, lengths, num_snippets, sps, durations.astype(np.float32),
              graph_mode=config["interpolation"] == 3, **config)


@pytest.mark.parametrize("seed", [0, 1])
def test_full_size_agreement(seed):
    # THUMOS14-like: T = 400, C = 20, x24, real-length videos from 60 to 3000 snippets.
    rng = np.random.default_rng(100 + seed)
    rgb, flow = random_streams(rng, 2, 400, 20, smooth=True)
    num_snippets = np.array([60, 2700])
    sps = np.array([.64, .64], np.float32)
    out = check(rgb, flow, [400, 400], num_snippets, sps, interpolation=24, max_detections=100,
                max_components_per_class=64, graph_mode=True)
    assert out["num_detections"].min() > 0


# --------------------------------------------------------------------------- wrapper and errors

def test_localizer_config_round_trip_and_output():
    rng = np.random.default_rng(7)
    rgb, flow = random_streams(rng, 3, 10, 2)
    config = dict(class_threshold=.15, tcam_threshold=.1, alpha=.3, interpolation=4, nms_threshold=.4,
                  max_detections=7, max_components_per_class=5, max_classes_per_video=None)
    # jit_compile=False keeps the test fast; the XLA path of localize is covered above.
    localizer = Localizer.from_config(Localizer(LocalizerConfig(**config), jit_compile=False).get_config())
    assert localizer.get_config() == dict(LocalizerConfig(**config).to_dict(), jit_compile=False)
    assert localizer.config == LocalizerConfig(**config)
    out = localizer(rgb, flow, lengths=[10, 7, 3], num_snippets=[20, 7, 100], seconds_per_snippet=[.64] * 3)
    assert all(isinstance(out[key], np.ndarray) for key in KEYS)  # eagerly: numpy in, numpy out
    direct = localize(rgb, flow, lengths=[10, 7, 3], num_snippets=[20, 7, 100], seconds_per_snippet=[.64] * 3,
                      config=LocalizerConfig(**config))
    for key in KEYS:
        np.testing.assert_array_equal(out[key], direct[key].numpy())


def test_bad_inputs_raise_stpn_error():
    rgb, flow = random_streams(np.random.default_rng(0), 1, 4, 2)
    common = dict(num_snippets=[4], seconds_per_snippet=[1.])
    with pytest.raises(StpnError, match="lengths"):
        localize(rgb, flow, lengths=[5], **common)
    with pytest.raises(StpnError, match="lacks"):
        localize({"attention": rgb["attention"]}, flow, lengths=[4], **common)
    with pytest.raises(StpnError, match="inconsistent"):
        localize(rgb, dict(flow, tcam=np.zeros((1, 4, 3), np.float32)), lengths=[4], **common)
    with pytest.raises(StpnError, match="interpolation"):
        LocalizerConfig(interpolation=0)
    with pytest.raises(StpnError, match="max_classes_per_video"):
        LocalizerConfig(max_classes_per_video=-1)
    with pytest.raises(StpnError, match="unknown settings"):
        LocalizerConfig.from_dict({"tcam_thresold": .1})
    assert LocalizerConfig.from_dict({"max_classes_per_video": 0}).max_classes_per_video is None
    pick = lambda s: {key: value[0] for key, value in s.items()}  # noqa: E731
    bad = pick(rgb)
    bad["tcam"] = bad["tcam"].copy()
    bad["tcam"][1, 0] = np.nan
    with pytest.raises(StpnError, match="NaN"):
        localize_video(bad, pick(flow), length=4, num_snippets=4, seconds_per_snippet=1.)
    with pytest.raises(StpnError, match="exceeds"):
        localize_video(pick(rgb), pick(flow), length=5, num_snippets=4, seconds_per_snippet=1.)


def test_unknown_time_dimension_under_xla():
    # The all-snippets export traces with T unknown; that path (while-loop running maximum) must give
    # the same detections as the static one.
    rng = np.random.default_rng(11)
    rgb, flow = random_streams(rng, 3, 13, 2)
    kwargs = dict(interpolation=3, max_detections=8, max_components_per_class=4)
    spec = {"attention": tf.TensorSpec([None, None], tf.float32), "tcam": tf.TensorSpec([None, None, 2], tf.float32),
            "probabilities": tf.TensorSpec([None, 2], tf.float32)}
    config = make_config(kwargs)
    run = tf.function(lambda r, f, n: localize(r, f, lengths=n, num_snippets=n, seconds_per_snippet=[1.] * 3,
                                               config=config),
                      jit_compile=True, input_signature=[spec, spec, tf.TensorSpec([None], tf.int32)])
    lengths = np.array([13, 9, 4], np.int32)
    got = run(rgb, flow, lengths)
    expected = localize(rgb, flow, lengths=lengths, num_snippets=lengths, seconds_per_snippet=[1.] * 3, config=config)
    for key in KEYS:
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


# --------------------------------------------------------------------------- bounds derived from the data

def test_component_count_bound_by_hand_and_against_the_reference():
    # psi = lambda * sigmoid(0) = lambda / 2 with lambda [.4, 0, .4, .4, 0, .3]: knots .2 0 .2 .2 0 .15 and
    # the extrapolated last position .15 + (k - 1) / k * .15 > .05: runs {0}, {2, 3}, {5, end} -> 3.
    # Flow rejects the class (p = .05 < .1) -> 0. With length 4: knots .2 0 .2 .2 and .2 + 0 -> 2.
    rgb, flow = streams([[.4, 0, .4, .4, 0, .3]], const_tcam(0, 6), [[.9]], np.ones((1, 6)), const_tcam(0, 6),
                        [[.05]])
    bound = component_count_bound(rgb, flow, [6], LocalizerConfig(interpolation=3))
    np.testing.assert_array_equal(bound, [[[3], [0]]])
    np.testing.assert_array_equal(component_count_bound(rgb, flow, [4], LocalizerConfig(interpolation=3)), [[[2], [0]]])
    # Random data, every signal option: never below the reference's number of components.
    rng = np.random.default_rng(5)
    rgb, flow = random_streams(rng, 5, 30, 3)
    lengths = np.array([30, 17, 2, 1, 0])
    for options in (dict(), dict(proposal_signal="attention", normalize=True), dict(proposal_thresholds=(.05, .3))):
        config = LocalizerConfig(interpolation=5, class_threshold=0., **options)
        bound = component_count_bound(rgb, flow, lengths, config)
        for b, length in enumerate(lengths[:-1]):
            for s, stream in enumerate((rgb, flow)):
                attention, tcam = stream["attention"][b, :length], stream["tcam"][b, :length].astype(np.float64)
                signal = attention[:, None] * 1 / (1 + np.exp(-tcam))
                if options.get("proposal_signal") == "attention":
                    signal = np.repeat(attention[:, None].astype(np.float64), 3, 1)
                if options.get("normalize"):
                    signal = np.stack([min_max_normalized(signal[:, c]) for c in range(3)], 1)
                fine = interpolate(signal, 5)
                exact = [sum(len(connected_components(fine[:, c] > t)) for t in config.thresholds) for c in range(3)]
                assert np.all(bound[b, s] >= exact), (options, b, s, bound[b, s], exact)
                if not options:
                    np.testing.assert_array_equal(bound[b, s], exact)
        np.testing.assert_array_equal(bound[-1], 0)  # length 0


DERIVED_CASES = [
    dict(),  # the paper's settings: more than 8 components per class (slot bucket 16 or 32)
    dict(max_classes_per_video=2),  # the Q bound picked in numpy
    dict(proposal_thresholds=(.05, .2), scoring="oic", nms="soft", max_detections=400),  # soft-NMS keeps all
    dict(max_detections=12),  # videos with more than K detections: the K cut in numpy, as `localize` cuts
    dict(proposal_thresholds=(.05, .2), nms="soft", max_detections=12),  # soft-NMS scores across the K cut
]


@pytest.mark.parametrize("options", DERIVED_CASES, ids=lambda o: "-".join(o) or "paper")
def test_derived_bounds_equal_the_configured_ones(options):
    options = dict(options)
    rng = np.random.default_rng(21)
    rgb, flow = random_streams(rng, 6, 40, 5)
    for stream in (rgb, flow):
        stream["probabilities"][:, 0] = .9
    common = dict(lengths=[40, 33, 12, 1, 0, 40], num_snippets=[80, 33, 500, 1, 0, 40],
                  seconds_per_snippet=[.64] * 6, durations=[50., 21., 320., .64, 0., 25.6])
    config = LocalizerConfig(interpolation=3, max_detections=options.pop("max_detections", 120),
                             max_components_per_class=40, **options)
    localizer = Localizer(config)
    got = localizer(rgb, flow, **common)
    expected = localize(rgb, flow, config=config, **common)
    for key in KEYS:
        np.testing.assert_array_equal(got[key], expected[key].numpy(), err_msg=key)
    counts = component_count_bound(rgb, flow, common["lengths"], config)
    assert counts.max() > 8  # the derived slot bucket is not the smallest one
    cut = config.max_detections == 12
    assert localizer.fallbacks == 0  # the K cut too runs on the derived bounds
    if cut:
        assert int(np.max(expected["num_detections"].numpy())) == 12


def test_float32_tie_across_the_k_cut_falls_back():
    # `localize` cuts a video's detections to K by their float32 roundings (ops.select_top): two candidates
    # that round alike on both sides of the cut are left to the configured bounds, which decide as always.
    rgb, flow = ({"attention": np.ones((1, 8), np.float32), "tcam": np.zeros((1, 8, 2), np.float32),
                  "probabilities": np.full((1, 2), .9, np.float32)} for _ in range(2))
    for stream in (rgb, flow):  # four separate runs per stream and class, all with the same score
        stream["attention"][0, 1::2] = 0.
    common = dict(lengths=[8], num_snippets=[8], seconds_per_snippet=[1.])
    config = LocalizerConfig(interpolation=1, max_detections=3, max_components_per_class=8)
    localizer = Localizer(config)
    got = localizer(rgb, flow, **common)
    expected = localize(rgb, flow, config=config, **common)
    for key in KEYS:
        np.testing.assert_array_equal(got[key], expected[key].numpy(), err_msg=key)
    assert localizer.fallbacks == 1 and int(got["num_detections"][0]) == 3


def test_derived_bound_that_does_not_hold_falls_back(monkeypatch):
    # A first pass that underestimates (as a rounding difference at a threshold could): the graph finds
    # more components than slots, and the configured bounds run instead; the output does not change.
    import stpn_tf.localize.localizer as module

    rng = np.random.default_rng(22)
    rgb, flow = random_streams(rng, 3, 40, 2)
    common = dict(lengths=[40, 25, 40], num_snippets=[40, 25, 90], seconds_per_snippet=[1.] * 3)
    config = LocalizerConfig(interpolation=2, max_detections=150, max_components_per_class=40, class_threshold=0.)
    monkeypatch.setattr(module, "component_count_bound", lambda *args: np.zeros((3, 2, 2), np.int64))
    localizer = Localizer(config)
    got = localizer(rgb, flow, **common)
    expected = localize(rgb, flow, config=config, **common)
    for key in KEYS:
        np.testing.assert_array_equal(got[key], expected[key].numpy(), err_msg=key)
    assert localizer.fallbacks == 1 and list(localizer._rows) == [8]

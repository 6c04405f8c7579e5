"""The Localizer's options beyond the paper: hand cases, the numpy reference, runtime settings."""

import math

import numpy as np
import pytest

from stpn_tf.core.errors import StpnError
from stpn_tf.localize import Localizer, LocalizerConfig, localize
from tests.helpers.localize import KEYS, check, random_streams, streams

# One video, T = 8, k = 1, 8 snippets of 1 s (grid position g = g seconds), alpha = .5.
# RGB attention below, a_rgb = 0 for class 0: psi = lambda / 2 = [.03, .1, .4, .4, .4, .4, .1, .02].
# Flow: a_flow = 2 for class 0, so the RGB score sequence is lambda * (.5 * 0 + .5 * 2) = lambda.
# Flow's probabilities are 0: flow proposes nothing. RGB's class-0 probability is .6.
ATTENTION = [[.06, .2, .8, .8, .8, .8, .2, .04]]


def hand_streams(tcam_rgb_1=-4., tcam_flow_1=0.):
    tcam_rgb = np.stack([np.zeros(8), np.full(8, tcam_rgb_1)], -1)[None]
    tcam_flow = np.stack([np.full(8, 2.), np.full(8, tcam_flow_1)], -1)[None]
    return streams(ATTENTION, tcam_rgb, [[.6, .6]], np.ones((1, 8)), tcam_flow, [[0., 0.]])


def hand_check(expected, **options):
    rgb, flow = hand_streams(**options.pop("tcams", {}))
    check(rgb, flow, [8], [8], [1.], interpolation=1, max_detections=6, expected=[expected], **options)


def test_paper_default_by_hand():
    # psi > .05 on positions 1..6: one run, mean score (.2 + 4 * .8 + .2) / 6.
    hand_check([(0, .6, 1., 7.)])


def test_oic_scoring_by_hand():
    # Run [1, 6], length 6, margin .25 * 6 = 1.5: outer positions [max(0, floor(-.5)), 1) = {0} and
    # (6, min(7, floor(7.5))] = {7}: outer mean (.06 + .04) / 2 = .05. Video score .5 * .6 + .5 * 0 = .3,
    # times gamma .2 = .06. OIC = .6 - .05 + .06 = .61.
    hand_check([(0, .61, 1., 7.)], scoring="oic")
    # gamma 0 and margin .5 (3 positions each side, clipped to the video: {0} and {7}): .6 - .05.
    hand_check([(0, .55, 1., 7.)], scoring="oic", oic_gamma=0., oic_margin=.5)
    # Margin .1: .6 positions -> floor(1 - .6) = 0 and floor(6.6) = 6: only position 0 is outer.
    hand_check([(0, .6 - .06 + .06, 1., 7.)], scoring="oic", oic_margin=.1)


@pytest.mark.parametrize("nms_threshold,expected", [
    # Thresholds .05 and .3: runs [1, 6] (score .6) and [2, 5] (score .8), tIoU [2, 6) vs [1, 7) = 4 / 6.
    (.5, [(0, .8, 2., 6.)]),
    (.7, [(0, .8, 2., 6.), (0, .6, 1., 7.)]),
])
def test_multi_threshold_proposals_by_hand(nms_threshold, expected):
    hand_check(expected, proposal_thresholds=(.05, .3), nms_threshold=nms_threshold)
    # The same run found by two thresholds (.3 and .35: both give [2, 5]) is one candidate after NMS.
    hand_check(expected[:1], proposal_thresholds=(.3, .35), nms_threshold=nms_threshold)


def test_soft_nms_by_hand():
    # As above: .8 first, then .6 decayed by exp(-(4/6)^2 / .3).
    decayed = .6 * math.exp(-(4 / 6) ** 2 / .3)
    hand_check([(0, .8, 2., 6.), (0, decayed, 1., 7.)], proposal_thresholds=(.05, .3), nms="soft")
    # sigma 1: exp(-(4/6)^2).
    hand_check([(0, .8, 2., 6.), (0, .6 * math.exp(-(4 / 6) ** 2), 1., 7.)], proposal_thresholds=(.05, .3),
               nms="soft", soft_nms_sigma=1.)


def test_min_score_and_detections_per_video_by_hand():
    # As above: soft-NMS keeps .8 and .6 decayed to .6 * exp(-(4/6)^2 / .3) = .137; min_score .2 drops the
    # decayed near-duplicate, a score equal to min_score stays.
    decayed = .6 * math.exp(-(4 / 6) ** 2 / .3)
    soft = dict(proposal_thresholds=(.05, .3), nms="soft")
    hand_check([(0, .8, 2., 6.)], min_score=.2, **soft)
    hand_check([(0, .8, 2., 6.), (0, decayed, 1., 7.)], min_score=decayed, **soft)
    # Hard NMS at .7 keeps both (.8 and .6): min_score .7 keeps one; detections_per_video 1 keeps the best.
    hard = dict(proposal_thresholds=(.05, .3), nms_threshold=.7)
    hand_check([(0, .8, 2., 6.)], min_score=.7, **hard)
    hand_check([(0, .8, 2., 6.)], detections_per_video=1, **hard)
    hand_check([(0, .8, 2., 6.), (0, .6, 1., 7.)], detections_per_video=2, **hard)
    # Both options at their defaults (-inf, 0) are the paper.
    hand_check([(0, .6, 1., 7.)], min_score=-math.inf, detections_per_video=0)


def test_attention_proposals_by_hand():
    # Class 1: a_rgb = -4, a_flow = 5 -> score sequence lambda * (.5 * -4 + .5 * 5) = .5 lambda. Its psi is
    # lambda * sigmoid(-4) < .015, so with psi nothing of class 1 passes .3; class 0's psi .4 passes on [2, 5].
    tcams = dict(tcam_rgb_1=-4., tcam_flow_1=5.)
    hand_check([(0, .8, 2., 6.)], tcam_threshold=.3, tcams=tcams)
    # Thresholding lambda itself (> .3 on [2, 5]) proposes [2, 5] for both passing classes: .8 and .4.
    hand_check([(0, .8, 2., 6.), (1, .4, 2., 6.)], tcam_threshold=.3, proposal_signal="attention", tcams=tcams)


def test_one_proposing_stream_by_hand():
    # Flow rejects both classes (probability 0) and RGB passes both: with proposal_streams="flow" the flow
    # signal proposes them anyway. Flow attention is 1: psi_flow = sigmoid(2) for class 0 and sigmoid(0)
    # for class 1, above .05 everywhere: one run [0, 7] each, scored with eq. 7's sequence 1 * mixed:
    # .5 * 0 + .5 * 2 = 1 (class 0) and .5 * -4 + .5 * 0 = -2 (class 1).
    hand_check([(0, 1., 0., 8.), (1, -2., 0., 8.)], proposal_streams="flow")
    # RGB alone: the paper's RGB proposals (class 1's psi, lambda * sigmoid(-4) < .015, proposes nothing);
    # here flow proposed nothing anyway, so this equals the paper default.
    hand_check([(0, .6, 1., 7.)], proposal_streams="rgb")
    # Classes rejected by both streams (RGB .6 < .7) are not proposed by either.
    hand_check([], proposal_streams="flow", class_threshold=.7)


def test_min_max_normalized_signal_by_hand():
    # psi min .02, max .4: (psi - .02) / .38 is 1 on [2, 5], .21 at 1 and 6, .026 at 0, 0 at 7.
    hand_check([], tcam_threshold=.5)
    # Class 1 (psi = lambda * sigmoid(-4), the same shape) normalises to the same signal: its runs appear
    # too, scored lambda * (.5 * -4 + .5 * 0) = -2 lambda: what makes normalisation promote weak classes.
    hand_check([(0, .8, 2., 6.), (1, -1.6, 2., 6.)], tcam_threshold=.5, normalize=True)
    hand_check([(0, .6, 1., 7.), (1, -1.2, 1., 7.)], tcam_threshold=.1, normalize=True)


OPTION_SETS = [
    dict(proposal_thresholds=(.02, .05, .1, .2)),
    dict(scoring="oic"),
    dict(proposal_signal="attention", proposal_thresholds=(.2, .4, .6)),
    dict(normalize=True, proposal_thresholds=(0., .1, .25), scoring="oic", nms_threshold=.3),
    dict(nms="soft", soft_nms_sigma=.5, min_score=.05, detections_per_video=4),
    dict(nms="soft", proposal_thresholds=(.05, .15), scoring="oic", oic_margin=.1, oic_gamma=.5),
    dict(proposal_signal="attention", normalize=True, proposal_thresholds=(.3, .6), max_classes_per_video=2),
    dict(proposal_streams="flow"),
    dict(proposal_streams="rgb", proposal_thresholds=(.05, .2), max_classes_per_video=2, nms="soft"),
    dict(scoring="oic", min_score=0., detections_per_video=2),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "-".join(f"{k}" for k in o))
def test_options_agree_with_reference(options):
    for seed in range(2):
        rng = np.random.default_rng(50 + seed)
        b, t, c = 5, 14, 3
        rgb, flow = random_streams(rng, b, t, c, smooth=seed == 1)
        lengths = rng.integers(1, t + 1, b)
        lengths[0] = t
        num_snippets = rng.integers(1, 500, b)
        sps = rng.uniform(.3, 1., b).astype(np.float32)
        check(rgb, flow, lengths, num_snippets, sps, interpolation=3, max_components_per_class=12,
              max_detections=30, graph_mode=seed == 0 and options is OPTION_SETS[3], **options)


def test_options_at_full_size():
    # THUMOS14-like T = 400, C = 20, x24, BaS-Net-like multi-threshold with OIC and soft-NMS.
    rng = np.random.default_rng(7)
    rgb, flow = random_streams(rng, 2, 400, 20, smooth=True)
    out = check(rgb, flow, [400, 250], [60, 2700], [.64, .64], interpolation=24, max_detections=100,
                max_components_per_class=32, proposal_thresholds=(.05, .2), scoring="oic", nms="soft")
    assert out["num_detections"].min() > 0


def test_runtime_settings_need_no_new_compile():
    rng = np.random.default_rng(3)
    rgb, flow = random_streams(rng, 4, 12, 3)
    common = dict(lengths=[12, 9, 5, 12], num_snippets=[30, 9, 100, 12], seconds_per_snippet=[.64] * 4)
    bounds = dict(interpolation=4, max_detections=20, max_components_per_class=8, proposal_thresholds=(.05, .1))
    localizer = Localizer(LocalizerConfig(**bounds), share_functions=False)  # its compiles counted from zero
    variants = [dict(), dict(class_threshold=.2, alpha=.3), dict(proposal_thresholds=(.2, .3), nms_threshold=.3),
                dict(scoring="oic", oic_margin=.4, oic_gamma=.1), dict(proposal_signal="attention", normalize=True),
                dict(proposal_streams="flow", class_threshold=.3), dict(proposal_streams="rgb"),
                dict(nms="soft", soft_nms_sigma=.5), dict(nms="soft", min_score=.1, detections_per_video=3),
                dict(detections_per_video=2)]
    for variant in variants:
        settings = LocalizerConfig(**bounds).replace(**variant)
        got = localizer(rgb, flow, settings=settings, **common)
        expected = localize(rgb, flow, config=settings, **common)
        for key in KEYS:
            np.testing.assert_array_equal(got[key], expected[key].numpy(), err_msg=f"{variant} {key}")
    # One function over (video, class) rows (one row and slot bucket here; videos with more than K = 20
    # detections, video 0 at the base settings, are cut in numpy); none is traced again.
    assert localizer.fallbacks == 0 and localizer.tracing_count() == 1
    for variant in variants:
        localizer(rgb, flow, settings=LocalizerConfig(**bounds).replace(**variant), **common)
    assert localizer.tracing_count() == 1
    with pytest.raises(StpnError, match="structure"):
        localizer(rgb, flow, settings=LocalizerConfig(**bounds).replace(proposal_thresholds=(.1,)), **common)
    with pytest.raises(StpnError, match="structure"):
        localizer(rgb, flow, settings=LocalizerConfig(**bounds).replace(max_detections=30), **common)


def test_one_listed_threshold_is_the_paper():
    rng = np.random.default_rng(4)
    rgb, flow = random_streams(rng, 3, 20, 4, smooth=True)
    common = dict(lengths=[20, 11, 3], num_snippets=[20, 50, 3], seconds_per_snippet=[.64] * 3)
    bounds = dict(interpolation=6, max_detections=40, max_components_per_class=10)
    paper = localize(rgb, flow, config=LocalizerConfig(**bounds), **common)
    listed = localize(rgb, flow, config=LocalizerConfig(proposal_thresholds=(.05,), **bounds), **common)
    for key in KEYS:
        np.testing.assert_array_equal(paper[key].numpy(), listed[key].numpy())


def test_bad_option_values():
    for bad, match in [(dict(scoring="max"), "scoring"), (dict(nms="fuse"), "nms"),
                       (dict(proposal_signal="sum"), "proposal_signal"),
                       (dict(proposal_streams="joint"), "proposal_streams"), (dict(soft_nms_sigma=0.), "sigma"),
                       (dict(oic_margin=-.1), "oic_margin"), (dict(proposal_thresholds=(.1, float("nan"))), "finite")]:
        with pytest.raises(StpnError, match=match):
            LocalizerConfig(**bad)
    with pytest.raises(StpnError, match="normalize"):
        LocalizerConfig.from_dict({"normalize": "yes"})
    with pytest.raises(StpnError, match="wrong type"):
        LocalizerConfig.from_dict({"proposal_thresholds": ["a"]})
    config = LocalizerConfig.from_dict({"proposal_thresholds": [.1, .2], "normalize": 1})
    assert config.proposal_thresholds == (.1, .2) and config.normalize is True
    assert LocalizerConfig.from_dict(config.to_dict()) == config


def test_rows_in_bounded_calls_give_the_same_output():
    # A tiny row budget: one (video, class) row per compiled call, all of one shape; the output is the
    # configured graph's, and the calls compile once.
    rng = np.random.default_rng(5)
    rgb, flow = random_streams(rng, 4, 12, 3)
    common = dict(lengths=[12, 9, 5, 12], num_snippets=[30, 9, 100, 12], seconds_per_snippet=[.64] * 4)
    config = LocalizerConfig(interpolation=4, max_detections=20, max_components_per_class=8, class_threshold=0.)
    localizer = Localizer(config, row_elements=1, share_functions=False)
    got = localizer(rgb, flow, **common)
    expected = localize(rgb, flow, config=config, **common)
    for key in KEYS:
        np.testing.assert_array_equal(got[key], expected[key].numpy(), err_msg=key)
    assert localizer.fallbacks == 0 and localizer.tracing_count() == 1


def test_localizer_rows_with_and_without_xla():
    # Videos of very different lengths padded to the longest (all-snippet outputs): the eager Localizer
    # under XLA (every row at the full length) and without XLA (rows grouped by the power of two that
    # holds their length, sorted by component count) give the configured graph's output exactly.
    rng = np.random.default_rng(11)
    b, t, c = 6, 300, 3
    rgb, flow = random_streams(rng, b, t, c, smooth=True)
    for s in (rgb, flow):
        s["probabilities"][:] = np.maximum(s["probabilities"], .2)
    common = dict(lengths=[300, 40, 7, 130, 65, 1], num_snippets=[300, 40, 7, 130, 65, 1],
                  seconds_per_snippet=[.64] * b)
    options = dict(nms="soft", scoring="oic", proposal_thresholds=(.05, .15, .3), min_score=.05,
                   detections_per_video=5)
    config = LocalizerConfig.from_dict({"interpolation": 2, "max_detections": 7, "max_components_per_class": 16,
                                        **options})
    expected = localize(rgb, flow, config=config, **common)
    assert int(np.max(expected["num_detections"])) > 1
    for jit in (True, False):
        localizer = Localizer(config, jit_compile=jit)
        got = localizer(rgb, flow, **common)
        for key in KEYS:
            np.testing.assert_array_equal(got[key], expected[key].numpy(), err_msg=f"{key} jit={jit}")
        assert localizer.fallbacks == 0
    assert int(np.max(expected["num_detections"])) == options["detections_per_video"]


def test_localizers_of_one_structure_share_their_compiles():
    # A second Localizer of the same structure (other runtime settings) runs the first one's compiled
    # function: no new compile, and the output of a Localizer with functions of its own.
    rng = np.random.default_rng(21)
    rgb, flow = random_streams(rng, 3, 12, 3)
    common = dict(lengths=[12, 7, 12], num_snippets=[12, 7, 30], seconds_per_snippet=[.64] * 3)
    config = LocalizerConfig(interpolation=3, max_detections=10, max_components_per_class=6, class_threshold=0.)
    first = Localizer(config)
    first(rgb, flow, **common)
    soft = config.replace(nms="soft", soft_nms_sigma=.4)
    second = Localizer(soft)
    got = second(rgb, flow, **common)
    assert second.tracing_count() == 0 and second._functions is first._functions
    own = Localizer(soft, share_functions=False)
    expected = own(rgb, flow, **common)
    assert own.tracing_count() == 1 and own._functions is not first._functions
    for key in KEYS:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    np.testing.assert_array_equal(got["num_detections"], localize(rgb, flow, config=soft, **common)["num_detections"])


def test_row_chunks_on_two_threads_equal_one_thread(monkeypatch):
    # Rows of several widths (all-snippet outputs: 128 and 300 positions under XLA) and several chunks each
    # (a small row budget): the compiled calls run two at a time and give what one at a time gives, byte
    # for byte, and the configured graph's output.
    from stpn_tf.localize import localizer as module

    rng = np.random.default_rng(13)
    b, t, c = 5, 300, 3
    rgb, flow = random_streams(rng, b, t, c, smooth=True)
    for s in (rgb, flow):
        s["probabilities"][:] = np.maximum(s["probabilities"], .2)
    common = dict(lengths=[300, 40, 130, 7, 290], num_snippets=[300, 40, 130, 7, 290], seconds_per_snippet=[.64] * b)
    config = LocalizerConfig(interpolation=2, max_detections=12, max_components_per_class=16)
    expected = localize(rgb, flow, config=config, **common)
    calls = []
    run_jobs = module._run_jobs
    monkeypatch.setattr(module, "_run_jobs", lambda call, jobs: calls.append(len(jobs)) or run_jobs(call, jobs))
    got = {}
    for threads in (2, 1):
        monkeypatch.setattr(module, "ROW_THREADS", threads)
        localizer = Localizer(config, row_elements=2 * 300 * 2)  # 2 rows of 300 positions a call
        got[threads] = localizer(rgb, flow, **common)
        assert localizer.fallbacks == 0
    assert calls[0] > 2  # several chunks: the two-thread run had work for both
    for key in KEYS:
        np.testing.assert_array_equal(got[2][key], got[1][key], err_msg=key)
        np.testing.assert_array_equal(got[2][key], expected[key].numpy(), err_msg=key)


def test_run_jobs_order_threads_and_errors(monkeypatch):
    import threading

    from stpn_tf.localize import localizer as module

    monkeypatch.setattr(module, "ROW_THREADS", 2)
    both = threading.Barrier(2, timeout=20)  # broken (and the test failed) unless two threads take jobs 0 and 1
    seen = []

    def call(i):
        if i < 2:
            both.wait()
        seen.append(i)
        return i * i

    assert module._run_jobs(call, [(i,) for i in range(7)]) == [i * i for i in range(7)]
    assert sorted(seen) == list(range(7))  # each job once
    assert module._run_jobs(call, [(5,)]) == [25]  # one job: this thread alone (the barrier is not reached)

    def fails(i):
        if i == 3:
            raise ValueError("job 3 failed")
        return i

    with pytest.raises(ValueError, match="job 3 failed"):
        module._run_jobs(fails, [(i,) for i in range(6)])

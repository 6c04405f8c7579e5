"""The Localizer test helpers: run one config in every mode (eager, graph, XLA) and compare with the numpy
reference; stream builders. Shared by test_localize.py and test_localize_options.py."""

import numpy as np
import tensorflow as tf

from stpn_tf.localize import LocalizerConfig, localize
from stpn_tf.localize.graph import runtime_tensors
from stpn_tf.localize.reference import localize_video

KEYS = ("detection_classes", "detection_scores", "detection_segments", "num_detections")
# Small bounds keep the hand cases' compiles fast; tests that exceed them say so.
TEST_BOUNDS = dict(max_detections=100, max_components_per_class=64, max_classes_per_video=8)


def make_config(kwargs) -> LocalizerConfig:
    return LocalizerConfig.from_dict({**TEST_BOUNDS, **kwargs})


_COMPILED: dict[tuple, object] = {}


def compiled(jit: bool, config: LocalizerConfig):
    """`localize` under tf.function, one per structure: the runtime settings are inputs (runtime_tensors),
    so cases that differ only in them reuse one compile, as the Localizer does."""
    key = (jit, config.structure())
    if key not in _COMPILED:
        def run(rgb, flow, lengths, num_snippets, sps, durations, settings):
            return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets, seconds_per_snippet=sps,
                            durations=durations, config=config, settings=settings)

        _COMPILED[key] = tf.function(run, jit_compile=jit, autograph=False)  # as the Localizer: explicit control flow
    return _COMPILED[key]


def run_all_modes(rgb, flow, lengths, num_snippets, sps, durations=None, graph_mode=False, **kwargs):
    """Runs eagerly and under XLA (and plain tf.function if `graph_mode`); asserts identical outputs."""
    kwargs.setdefault("max_components_per_class", 8)  # small NMS loop: fast compiles in the hand cases
    config = make_config(kwargs)
    eager = localize(rgb, flow, lengths=lengths, num_snippets=num_snippets, seconds_per_snippet=sps,
                     durations=durations, config=config)
    durations_t = None if durations is None else tf.constant(durations, tf.float32)
    args = (rgb, flow, tf.constant(lengths, tf.int32), tf.constant(num_snippets, tf.int32),
            tf.constant(sps, tf.float32), durations_t)
    for jit in ((False, True) if graph_mode else (True,)):
        other = compiled(jit, config)(*args, runtime_tensors(config))
        for key in KEYS:
            np.testing.assert_array_equal(other[key].numpy(), eager[key].numpy(), err_msg=f"{key} jit={jit}")
    return {key: eager[key].numpy() for key in KEYS}


def detections(out, b):
    n = int(out["num_detections"][b])
    # Padding is part of the contract.
    assert np.all(out["detection_classes"][b, n:] == -1)
    assert np.all(out["detection_scores"][b, n:] == 0)
    assert np.all(out["detection_segments"][b, n:] == 0)
    return [(int(out["detection_classes"][b, i]), float(out["detection_scores"][b, i]),
             float(out["detection_segments"][b, i, 0]), float(out["detection_segments"][b, i, 1]))
            for i in range(n)]


def reference(rgb, flow, lengths, num_snippets, sps, durations=None, **kwargs):
    result = []
    for b in range(len(lengths)):
        pick = lambda s: {key: np.asarray(value)[b] for key, value in s.items()}  # noqa: E731
        result.append(localize_video(pick(rgb), pick(flow), length=int(lengths[b]),
                                     num_snippets=int(num_snippets[b]), seconds_per_snippet=float(sps[b]),
                                     duration=None if durations is None else float(durations[b]),
                                     config=make_config(kwargs)))
    return result


def assert_close(got, expected, score_tol=1e-5, time_tol=1e-4):
    assert len(got) == len(expected), f"{len(got)} detections, expected {len(expected)}:\n{got}\n{expected}"
    for g, e in zip(got, expected):
        assert g[0] == e[0], (g, e)
        assert abs(g[1] - e[1]) <= score_tol, (g, e)
        assert abs(g[2] - e[2]) <= time_tol and abs(g[3] - e[3]) <= time_tol, (g, e)


def pad(stream, t, c):
    """Pads a stream to [B, t, C=c]: positions past the valid length get large values (psi well above the
    threshold) and extra classes probability 0, so neither may change any detection. Padding every hand
    case to one shape also lets XLA compile once per setting instead of once per case."""
    b, t0, c0 = stream["tcam"].shape
    attention = np.concatenate([stream["attention"], np.full((b, t - t0), .9, np.float32)], 1)
    tcam = np.pad(stream["tcam"], ((0, 0), (0, t - t0), (0, c - c0)), constant_values=3.)
    probabilities = np.pad(stream["probabilities"], ((0, 0), (0, c - c0)))
    return {"attention": attention, "tcam": tcam, "probabilities": probabilities}


def check(rgb, flow, lengths, num_snippets, sps, durations=None, expected=None, graph_mode=False, **kwargs):
    """Graph (eager, XLA) == reference (== expected, when given, for every video)."""
    kwargs.setdefault("max_components_per_class", 8)
    kwargs.setdefault("max_classes_per_video", TEST_BOUNDS["max_classes_per_video"])
    b, t, c = rgb["tcam"].shape
    rgb, flow = pad(rgb, max(t, 12), max(c, 2)), pad(flow, max(t, 12), max(c, 2))
    if b == 1:  # a second, empty video (length 0) in the batch; it must get no detections
        rgb, flow = ({key: np.concatenate([value, value], 0) for key, value in s.items()} for s in (rgb, flow))
        lengths, num_snippets, sps = [*lengths, 0], [*num_snippets, 0], [*sps, 1.]
        durations = None if durations is None else [*durations, 0.]
        expected = None if expected is None else [*expected, []]
    out = run_all_modes(rgb, flow, lengths, num_snippets, sps, durations, graph_mode=graph_mode, **kwargs)
    ref = reference(rgb, flow, lengths, num_snippets, sps, durations, **kwargs)
    for b in range(len(lengths)):
        assert_close(detections(out, b), ref[b])
        if expected is not None:
            assert_close(ref[b], expected[b], score_tol=1e-6, time_tol=1e-6)
    return out


def streams(att_rgb, tcam_rgb, p_rgb, att_flow, tcam_flow, p_flow):
    """Batch-of-one (or more) stream dicts from nested lists; tcam given as [B, T, C]."""
    make = lambda att, tcam, p: {"attention": np.asarray(att, np.float32),  # noqa: E731
                                 "tcam": np.asarray(tcam, np.float32),
                                 "probabilities": np.asarray(p, np.float32)}
    return make(att_rgb, tcam_rgb, p_rgb), make(att_flow, tcam_flow, p_flow)


def const_tcam(value, t, c=1):
    return np.full((1, t, c), value, np.float32)


# --------------------------------------------------------------------------- hand-computed examples

def random_streams(rng, b, t, c, smooth=False):
    def one():
        attention = rng.uniform(0, 1, (b, t))
        tcam = rng.normal(0, 2, (b, t, c))
        if smooth:  # realistic: slowly varying outputs with a few long components
            kernel = np.ones(9) / 9
            attention = np.apply_along_axis(lambda x: np.convolve(x, kernel, "same"), 1, attention) ** 2
            tcam = np.apply_along_axis(lambda x: np.convolve(x, kernel, "same"), 1, tcam) * 3
        return {"attention": attention.astype(np.float32), "tcam": tcam.astype(np.float32),
                "probabilities": rng.uniform(0, .4, (b, c)).astype(np.float32)}
    return one(), one()

"""`stpn localize --raw` without TensorFlow: stpn_tf.localize.numpy_engine on saved raw outputs gives the
Localizer's detections byte for byte (issue 20) and the reference's, with hand cases for the vectorized steps."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from stpn_tf.artifacts import raw_outputs
from stpn_tf.core.errors import StpnError
from stpn_tf.inference import predict
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.localize.numpy_engine import (greedy_nms, interpolate_columns, localize_arrays, localize_raw_outputs,
                                          outer_means, soft_nms)
from stpn_tf.localize.reference import interpolate, localize_video
from tests.helpers.cli import cli, one_error_line
from tests.helpers.raw import random_raw

CLASSES = ["Jump", "Run", "Swim", "Dive", "Row"]
BOUNDS = dict(interpolation=4, max_detections=40, max_components_per_class=12)


@pytest.mark.parametrize("n", [1, 2, 5, 17])
@pytest.mark.parametrize("factor", [1, 3, 24])
def test_interpolate_is_np_interp_then_linear_extrapolation_bit_for_bit(n, factor):
    values = np.random.default_rng(n * factor).normal(size=(n, 3))
    got = interpolate_columns(values, factor)
    np.testing.assert_array_equal(got, interpolate(values, factor))  # the reference's, column by column
    positions = np.arange(n * factor) / factor
    for c in range(3):
        column = values[:, c]
        if n == 1:
            expected = np.full(factor, column[0])
        else:
            expected = np.interp(positions, np.arange(n, dtype=np.float64), column)
            past = positions > n - 1
            expected[past] = column[-1] + (positions[past] - (n - 1)) * (column[-1] - column[-2])
        np.testing.assert_array_equal(got[:, c], expected)


def test_nms_by_hand():
    # Rows (score, stream, start, end, threshold index) in NMS order. tIoU([0, 9], [5, 14]) = 5 / 15 = 1/3;
    # [20, 25] overlaps neither.
    ordered = np.array([(.9, 0, 0, 9, 0), (.8, 1, 5, 14, 0), (.7, 0, 20, 25, 0)], np.float64)
    assert greedy_nms(ordered, .3) == [(.9, 0), (.7, 2)]
    assert greedy_nms(ordered, .5) == [(.9, 0), (.8, 1), (.7, 2)]
    # Soft-NMS, sigma .5: the second decays to .8 * exp(-(1/3)^2 / .5) = .8 * exp(-2/9) = 0.640590 and is
    # picked after the third.
    kept = soft_nms(ordered, .5)
    assert [rank for _, rank in kept] == [0, 2, 1]
    assert kept[0][0] == .9 and kept[1][0] == .7
    assert math.isclose(kept[2][0], .8 * math.exp(-2 / 9), rel_tol=1e-15)
    # Equal scores: the earlier NMS rank is picked first.
    tie = np.array([(.5, 0, 0, 3, 0), (.5, 1, 10, 13, 0)], np.float64)
    assert [rank for _, rank in soft_nms(tie, .3)] == [0, 1]


def test_outer_means_by_hand():
    sequence = np.arange(10, dtype=np.float64)  # value = position
    # Run [4, 5] (size 2), margin .5: one position each side, 3 and 6 -> 4.5. Run [0, 1]: only 2 after it
    # (the margin before is clipped at the start) -> 2. Run [0, 9]: no margins inside the video -> 0.
    got = outer_means(sequence, np.array([4, 0, 0]), np.array([5, 1, 9]), .5)
    np.testing.assert_array_equal(got, [4.5, 2.0, 0.0])


CONFIGS = {
    "paper": LocalizerConfig(class_threshold=.3, tcam_threshold=.3, **BOUNDS),
    "multi_oic_soft": LocalizerConfig(class_threshold=.3, proposal_thresholds=(.1, .25, .4), scoring="oic",
                                      nms="soft", soft_nms_sigma=.3, **BOUNDS),
    "flow_normalized": LocalizerConfig(class_threshold=.2, tcam_threshold=.5, proposal_streams="flow",
                                       normalize=True, max_classes_per_video=2, **BOUNDS),
    "attention_cut": LocalizerConfig(class_threshold=.3, proposal_signal="attention", proposal_thresholds=(.4, .6),
                                     min_score=0.0, detections_per_video=5, alpha=.3, nms_threshold=.3, **BOUNDS),
    # More components than M and detections than K: the cuts.
    "tight_bounds": LocalizerConfig(class_threshold=.1, tcam_threshold=.2, interpolation=3, max_detections=6,
                                    max_components_per_class=2),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_raw_localization_is_the_localizers_byte_for_byte(name):
    config = CONFIGS[name]
    raw = random_raw(CLASSES, num_videos=10, t=20, seed=3, lengths=(1, 21), num_snippets=(5, 90), smooth=True,
                     max_probability=.6)
    raw["duration"][::3] = np.nan  # not given: num_snippets * seconds_per_snippet
    raw["duration"][1::3] *= np.float32(.9)  # clips the last detections
    numpy_results = localize_raw_outputs(raw, config)
    graph_results = predict.localize_raw(raw, Localizer(config))
    assert json.dumps(numpy_results) == json.dumps(graph_results)
    assert sum(map(len, numpy_results["results"].values())) > 0
    # One stream in both roles of eq. 7, as `--streams=rgb` runs it.
    one = localize_raw_outputs(raw, config, streams=("rgb",))
    assert json.dumps(one) == json.dumps(predict.localize_raw(raw, Localizer(config), streams=("rgb",)))


def test_progress_hears_every_thousand_videos_and_the_end(monkeypatch):
    from stpn_tf.localize import numpy_engine

    raw = random_raw(CLASSES, num_videos=9, t=8, seed=2, max_probability=.9)
    raw["rgb/probabilities"][:] = raw["flow/probabilities"][:] = 0.0
    raw["rgb/probabilities"][:, 0] = .9
    raw["rgb/probabilities"][2:5] = 0.0  # videos 2, 3 and 4 pass no class
    monkeypatch.setattr(numpy_engine, "PROGRESS_EVERY", 3)
    heard = []
    localize_raw_outputs(raw, LocalizerConfig(class_threshold=.5), progress=heard.append)
    # Before video 5 (3 done: the last multiple of 3 passed), before video 6 (6 done), then the end.
    assert heard == [3, 6, 9] and all(type(n) is int for n in heard)


def test_numpy_raw_localization_refuses_what_the_localizer_refuses():
    raw = random_raw(CLASSES, num_videos=3, t=8, seed=1, max_probability=.9)
    with pytest.raises(StpnError, match="no joint stream"):
        localize_raw_outputs(raw, LocalizerConfig(), streams=("joint",))
    with pytest.raises(StpnError, match="single-stream localization needs nms_threshold < 1"):
        localize_raw_outputs(raw, LocalizerConfig(nms_threshold=1.0), streams=("flow",))
    raw["flow/tcam"][2, 3, 1] = np.nan
    with pytest.raises(StpnError, match=r"video v2: .*'flow' tcam has NaN"):
        localize_raw_outputs(raw, LocalizerConfig(class_threshold=0.0))


def test_raw_cli_runs_without_tensorflow_and_names_the_file_on_bad_values(tmp_path):
    raw = random_raw(CLASSES, num_videos=4, t=12, seed=5, max_probability=.9)
    path = tmp_path / "raw.npz"
    raw_outputs.save_raw(str(path), raw)
    out = tmp_path / "numpy.json"
    script = ("import sys\nfrom stpn_tf.cli import main\n"
              f"code = main(['stpn', 'localize', '--raw={path}', '--out={out}', '--config.localize.interpolation=4'])\n"
              "print('tensorflow loaded:', 'tensorflow' in sys.modules)\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "tensorflow loaded: False" in proc.stdout
    graph = tmp_path / "graph.json"
    cli("localize", f"--raw={path}", f"--out={graph}", "--raw_engine=graph", "--config.localize.interpolation=4")
    assert out.read_bytes() == graph.read_bytes()
    raw["rgb/attention"][1, 0] = np.inf
    raw_outputs.save_raw(str(path), raw)
    proc = cli("localize", f"--raw={path}", f"--out={tmp_path / 'bad.json'}", expect=2)
    line = one_error_line(proc, str(path), "video v1", "'rgb' attention has NaN or infinite values")
    assert line.startswith("stpn localize: error:")
    assert not (tmp_path / "bad.json").exists()


def test_a_zero_score_is_positive_zero_as_the_localizer_writes_it():
    # Attention 0 makes the score sequence -0.0 (0 x a negative mixed T-CAM); psi = 0 > -0.5 passes.
    stream = {"attention": np.zeros(1, np.float32), "tcam": np.full((1, 1), -1.0, np.float32),
              "probabilities": np.ones(1, np.float32)}
    _, scores, _ = localize_arrays(stream, stream, length=1, num_snippets=1, seconds_per_snippet=1.0,
                                   config=LocalizerConfig(tcam_threshold=-0.5, interpolation=1))
    assert len(scores) == 1 and scores[0] == 0.0 and math.copysign(1.0, scores[0]) == 1.0


def test_raw_engine_is_refused_where_it_does_not_apply(tmp_path):
    proc = cli("localize", f"--workdir={tmp_path}", "--raw_engine=graph", expect=2)
    one_error_line(proc, "--raw_engine applies to --raw without --sweep")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_engine_is_the_reference_in_float32(name):
    config = CONFIGS[name]
    raw = random_raw(CLASSES, num_videos=12, t=16, seed=11, lengths=(0, 17), num_snippets=(1, 70), smooth=True,
                     max_probability=.7)

    def stream(s, i):
        return {key: raw[f"{s}/{key}"][i] for key in ("attention", "tcam", "probabilities")}

    total = 0
    for i in range(12):
        kwargs = dict(length=int(raw["length"][i]), num_snippets=int(raw["num_snippets"][i]),
                      seconds_per_snippet=.64, duration=float(raw["duration"][i]), config=config)
        labels, scores, seconds = localize_arrays(stream("rgb", i), stream("flow", i), **kwargs)
        expected = localize_video(stream("rgb", i), stream("flow", i), **kwargs)
        assert labels.tolist() == [d.class_index for d in expected]
        np.testing.assert_array_equal(scores.astype(np.float32), np.float32([d.score for d in expected]))
        np.testing.assert_array_equal(seconds.astype(np.float32).reshape(-1, 2),
                                      np.float32([(d.start, d.end) for d in expected]).reshape(-1, 2))
        total += len(expected)
    assert total > 0

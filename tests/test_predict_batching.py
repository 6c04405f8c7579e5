"""stpn_tf.inference.predict: batches from the data (issue 20) and work in proportion to the passing
(video, class) pairs, with output identical to fixed batches."""

import json

import numpy as np
import pytest

from stpn_tf.data.grid import GridConfig
from stpn_tf.artifacts import raw_outputs
from stpn_tf.inference import predict
from stpn_tf.inference.runner import load_serving_model
from stpn_tf.localize import Localizer, LocalizerConfig
from tests.helpers.cli import cli
from tests.helpers.raw import random_raw
from tests.helpers.workdir import write_random_split

CLASSES = ["Jump", "Run", "Swim"]
D = 5
CONFIG = LocalizerConfig(class_threshold=0.3, tcam_threshold=0.3, interpolation=4, max_detections=20,
                         max_components_per_class=64)


def test_batch_sizes_from_the_grid_length():
    def raw(t):
        return {"rgb/attention": np.zeros((2, t)), "flow/attention": np.zeros((2, t))}

    # 256 videos x 400 positions per call: 1,024 of ActivityNet's 100 positions, 9 two-hour videos of 11,250.
    assert [predict.localize_batch_size(raw(t)) for t in (400, 100, 11250, 200_000)] == [256, 1024, 9, 1]
    # The sweep's rule (moved here from stpn_tf.tuning.sweep): never more than 256 videos, fewer when longer.
    assert [predict.batch_size_for(raw(t)) for t in (400, 100, 800)] == [256, 256, 128]
    from stpn_tf.tuning import sweep

    assert sweep.batch_size_for is predict.batch_size_for


def test_record_batches_bound_videos_and_padded_bytes():
    sizes = [10, 10, 30, 10, 100, 5, 5]
    records = [bytes(n) for n in sizes]

    def grouped(**kwargs):
        return [[len(r) for r in batch] for batch in predict.record_batches(iter(records), **kwargs)]

    # At most 3 records per call.
    assert grouped(max_videos=3, max_bytes=10**6) == [[10, 10, 30], [10, 100, 5], [5]]
    # Padded size (records x longest) <= 60: [10, 10] (a third would pad to 3 x 30 = 90), [30] (2 x 30), [10],
    # [100] alone (larger than the bound: a call of its own), [5, 5].
    assert grouped(max_videos=8, max_bytes=60) == [[10, 10], [30, 10], [100], [5, 5]]
    assert grouped(max_videos=8, max_bytes=40) == [[10, 10], [30], [10], [100], [5, 5]]
    assert list(predict.record_batches(iter([]), max_videos=4)) == []


def test_passing_videos_are_those_with_a_class_over_the_threshold():
    raw = random_raw(CLASSES, num_videos=4, t=6, seed=0)
    for s in ("rgb", "flow"):
        raw[f"{s}/probabilities"][:] = 0.1
    raw["rgb/probabilities"][1, 2] = 0.3    # passes in rgb
    raw["flow/probabilities"][3, 0] = 0.5   # passes in flow
    raw["flow/probabilities"][2, 1] = np.float32(0.3) - 1e-7  # just under in float64 too
    assert list(raw_outputs.passing_videos(raw, class_threshold=0.3)) == [1, 3]
    assert list(raw_outputs.passing_videos(raw, streams=("rgb",), class_threshold=0.3)) == [1]
    assert list(raw_outputs.passing_videos(raw, class_threshold=0.1)) == [0, 1, 2, 3]


class _Counting(Localizer):
    """A Localizer that records how many videos each eager call got."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def _call_eagerly(self, rgb, flow, **kwargs):
        self.calls.append(len(rgb["probabilities"]))
        return super()._call_eagerly(rgb, flow, **kwargs)


def test_localize_raw_localizes_only_passing_videos_with_the_same_output():
    raw = random_raw(CLASSES, num_videos=9, t=12, seed=1)
    for s in ("rgb", "flow"):
        raw[f"{s}/probabilities"][[0, 2, 3, 5, 8]] *= 0.25  # under 0.3 in both streams: no detections possible
        raw[f"{s}/probabilities"][[1, 4, 6, 7], 1] = 0.9
    reference = predict.localize_raw(raw, Localizer(CONFIG, jit_compile=False), batch_size=2,
                                     batches=predict.raw_batches(raw, batch_size=2))  # every video, in pairs
    counting = _Counting(CONFIG, jit_compile=False)
    results = predict.localize_raw(raw, counting)  # batch_size 0: from the data
    assert counting.calls == [4]  # one call (up to 8,533 videos of 12 positions) ...
    assert list(raw_outputs.passing_videos(raw, class_threshold=0.3)) == [1, 4, 6, 7]  # ... of the 4 passing videos
    assert json.dumps(results) == json.dumps(reference)  # the same bytes, every video in the order of raw
    assert list(results["results"]) == [f"v{i}" for i in range(9)]
    assert all(results["results"][f"v{i}"] == [] for i in (0, 2, 3, 5, 8))
    assert sum(len(results["results"][f"v{i}"]) for i in (1, 4, 6, 7)) > 0
    counting.calls.clear()
    assert predict.localize_raw(raw, counting, batch_size=3) == reference
    assert counting.calls == [3, 3]  # 4 passing videos in calls of 3, the last padded


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A workdir of random models and one split of 7 videos of different lengths in 2 shards."""
    return write_random_split(tmp_path_factory.mktemp("split"), CLASSES, D, shards=2, seed=5)


@pytest.mark.parametrize("all_snippets", [False, True])
def test_predict_records_batches_from_the_data_give_the_same_output(split, all_snippets, monkeypatch):
    workdir, shards = split
    config = LocalizerConfig(interpolation=3, class_threshold=0.2, max_detections=12, max_components_per_class=6)
    model = load_serving_model(workdir, grid=GridConfig(length=8, all_snippets=all_snippets), localizer_config=config,
                               jit_compile=False)
    fixed, fixed_raw = predict.predict_records(model, shards, batch_size=3)
    sizes = []
    model_call = model.call_examples
    monkeypatch.setattr(model, "call_examples", lambda batch: sizes.append(len(batch)) or model_call(batch))
    derived, derived_raw = predict.predict_records(model, shards)  # batch_size 0: one call holds all 7
    assert sizes == [7]
    if all_snippets:
        # Every snippet: a call pads time to its longest video (here 32 for all 7 instead of 32, 16, 4 in
        # threes), and the models' float32 sums then round differently in the last bits, as with any batch size.
        assert list(derived["results"]) == list(fixed["results"])
        for video, detections in fixed["results"].items():
            got = derived["results"][video]
            assert [d["label"] for d in got] == [d["label"] for d in detections]
            assert [d["score"] for d in got] == pytest.approx([d["score"] for d in detections], rel=1e-5)
            assert [d["segment"] for d in got] == [d["segment"] for d in detections]
        return
    # On the grid (every call 8 positions) the bytes are the same.
    assert json.dumps(derived) == json.dumps(fixed)
    for key in fixed_raw:
        np.testing.assert_array_equal(derived_raw[key], fixed_raw[key])
    # A byte bound of two of the longest record per call: the calls `record_batches` forms, same output.
    sizes.clear()
    records = _records(shards)
    bound = 2 * max(len(r) for r in records)
    monkeypatch.setattr(predict, "FEATURE_BYTES_PER_CALL", bound)
    assert predict.predict_records(model, shards, keep_raw=False)[0] == fixed
    expected = [len(b) for b in predict.record_batches(iter(records), max_videos=256, max_bytes=bound)]
    assert sizes == expected and len(expected) > 1 and sum(expected) == 7
    # A pass that runs the stream models alone (stpn tune, stpn study) has a bound of its own, and the localizing
    # calls keep theirs: the same raw outputs either way.
    assert model.runs_streams_alone
    monkeypatch.setattr(predict, "FEATURE_BYTES_PER_CALL", 2 ** 28)
    monkeypatch.setattr(predict, "STREAM_FEATURE_BYTES_PER_CALL", bound)
    stream_sizes = []
    streams_call = model.call_streams
    monkeypatch.setattr(model, "call_streams", lambda batch: stream_sizes.append(len(batch)) or streams_call(batch))
    results, raw = predict.predict_records(model, shards, detections=False)
    assert results is None and stream_sizes == expected
    for key in fixed_raw:
        np.testing.assert_array_equal(raw[key], fixed_raw[key])
    sizes.clear()
    assert predict.predict_records(model, shards, keep_raw=False)[0] == fixed and sizes == [7]


def _records(shards):
    from stpn_tf.data.records import reader

    return list(reader.tfrecord_dataset(shards).as_numpy_iterator())


def test_cli_batch_size_default_and_refusal(tmp_path):
    from stpn_tf.cli import localize as localize_cli
    from stpn_tf.cli.common import RECORDED_CONFIG, Parsed

    raw = random_raw(CLASSES, num_videos=3, t=6, seed=2)
    path = str(tmp_path / "raw.npz")
    raw_outputs.save_raw(path, raw)
    proc = cli("localize", f"--raw={path}", "--config.localize.batch_size=-1", expect=2)
    assert "--config.localize.batch_size=-1: videos per call must be >= 0" in proc.stderr

    class Config:  # just what _batch_size reads
        class localize:
            batch_size = 16

    def parsed(name, overrides=()):
        return Parsed(flags=None, args=[], config=Config, config_name=name, overrides=overrides)

    # A work directory's recorded 16 (the old default) gives way to the data's batches; a value given on
    # the command line or by a --config file counts.
    assert localize_cli._batch_size(parsed(RECORDED_CONFIG)) == 0
    assert localize_cli._batch_size(parsed(RECORDED_CONFIG, ("localize.batch_size",))) == 16
    assert localize_cli._batch_size(parsed("thumos14")) == 16

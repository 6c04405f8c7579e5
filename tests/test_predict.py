"""stpn_tf.inference.predict: the composed graph over TFRecords, raw outputs, and the Localizer on raw outputs."""

import numpy as np
import pytest

from stpn_tf.artifacts import raw_outputs
from stpn_tf.inference import predict
from stpn_tf.data.records.schema import make_example
from stpn_tf.data.records.writer import ShardedWriter
from stpn_tf.data.grid import GridConfig
from stpn_tf.core.errors import StpnError
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.localize.reference import localize_video
from stpn_tf.inference.runner import load_serving_model
from tests.helpers.raw import random_raw
from tests.helpers.workdir import write_random_split

CLASSES = ["Jump", "Run", "Swim"]
D = 5


def _raw(num_videos=5, t=12, seed=0):
    raw = random_raw(CLASSES, num_videos=num_videos, t=t, seed=seed)
    raw["length"][1] = 7  # a padded video: only 7 valid grid positions
    return raw


def test_save_and_load_raw_round_trip(tmp_path):
    raw = _raw()
    path = str(tmp_path / "raw.npz")
    raw_outputs.save_raw(path, raw)
    loaded = raw_outputs.load_raw(path)
    assert loaded.keys() == raw.keys()
    for key, value in raw.items():
        np.testing.assert_array_equal(loaded[key], value)
    assert raw_outputs.raw_streams(loaded) == ("rgb", "flow")
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(StpnError, match="bad.npz"):
        raw_outputs.load_raw(str(tmp_path / "bad.npz"))
    with pytest.raises(StpnError, match="missing.npz"):
        raw_outputs.load_raw(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(StpnError, match="other.npz: not a raw-outputs file"):
        raw_outputs.load_raw(str(tmp_path / "other.npz"))


@pytest.mark.parametrize("streams", [("rgb", "flow"), ("flow",)])
def test_localize_raw_equals_reference(streams):
    raw = _raw()
    config = LocalizerConfig(class_threshold=0.3, tcam_threshold=0.3, interpolation=4, max_detections=20,
                             max_components_per_class=64)
    # batch_size 2 over 5 videos: the last batch is padded, which must not change anything.
    results = predict.localize_raw(raw, Localizer(config), streams=streams, batch_size=2)["results"]
    first, second = streams[0], streams[-1]
    assert sorted(results) == [f"v{i}" for i in range(5)]
    total = 0
    for i in range(5):
        stream = lambda s: {k: raw[f"{s}/{k}"][i] for k in ("attention", "tcam", "probabilities")}  # noqa: E731
        expected = localize_video(
            stream(first), stream(second), length=int(raw["length"][i]), num_snippets=int(raw["num_snippets"][i]),
            seconds_per_snippet=float(raw["seconds_per_snippet"][i]), duration=float(raw["duration"][i]),
            config=config)
        got = results[f"v{i}"]
        assert [d["label"] for d in got] == [CLASSES[e.class_index] for e in expected]
        for d, e in zip(got, expected):
            assert d["score"] == pytest.approx(e.score, abs=1e-5)
            assert d["segment"] == pytest.approx([e.start, e.end], abs=1e-4)
        total += len(expected)
    assert total > 0  # the comparison is not vacuous


def test_localize_raw_errors():
    raw = _raw()
    with pytest.raises(StpnError, match="no joint stream"):
        predict.localize_raw(raw, Localizer(), streams=("joint",))
    with pytest.raises(StpnError, match="streams must be"):
        predict.localize_raw(raw, Localizer(), streams=("joint", "rgb"))
    with pytest.raises(StpnError, match="nms_threshold < 1"):
        predict.localize_raw(raw, Localizer(LocalizerConfig(nms_threshold=1.0)), streams=("rgb",))


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A workdir of random models and one split of 7 videos in 3 shards (so the records interleave)."""
    return write_random_split(tmp_path_factory.mktemp("split"), CLASSES, D, shards=3, seed=3)


@pytest.mark.parametrize("all_snippets", [False, True])
def test_composed_graph_equals_localizer_on_its_raw_outputs(split, all_snippets):
    """The detections of one composed call are exactly what the Localizer gives on the raw outputs it
    returned: re-localizing saved outputs (--raw, --sweep, the demo's single-stream rows) reproduces it."""
    workdir, shards = split
    config = LocalizerConfig(interpolation=3, class_threshold=0.2, max_detections=12, max_components_per_class=6)
    model = load_serving_model(workdir, grid=GridConfig(length=8, all_snippets=all_snippets), localizer_config=config,
                               jit_compile=False)
    results, raw = predict.predict_records(model, shards, batch_size=3)
    # The shards are read interleaved one record at a time, which undoes the writer's round-robin: the
    # videos come back in the order they were written.
    assert list(results["results"]) == list(raw["video_id"]) == [f"v{i}" for i in range(7)]
    # With all snippets, serve_examples pads time to the next power of two of the longest video (17 -> 32).
    assert raw["rgb/tcam"].shape[1:] == ((32 if all_snippets else 8), 3)
    again = predict.localize_raw(raw, Localizer(config, jit_compile=False), batch_size=3)
    assert again == results
    # Without the raw outputs (stpn localize without --save_raw: memory flat in the split size), the same detections.
    assert predict.predict_records(model, shards, batch_size=3, keep_raw=False) == (results, None)
    # Raw outputs only (stpn tune): the same arrays, without running the Localizer.
    none, raw_only = predict.predict_records(model, shards, batch_size=3, detections=False)
    assert none is None and raw_only.keys() == raw.keys()
    for key in raw:
        np.testing.assert_array_equal(raw_only[key], raw[key], err_msg=key)
    if all_snippets:  # batches of 3 padded to 32, 16, 4 positions: the later ones are zero past their own padding
        assert raw["rgb/attention"].shape == (7, 32) and not raw["rgb/attention"][6, 4:].any()
    assert sum(len(d) for d in results["results"].values()) > 0
    expected_lengths = [4, 9, 1, 17, 6, 12, 3] if all_snippets else [8] * 7
    np.testing.assert_array_equal(raw["length"], expected_lengths)


def test_streamed_detections_file_equals_the_old_one_byte_for_byte(split, tmp_path):
    """`stpn localize` writes detections as they come (ResultsWriter as predict_records' sink): the same
    bytes as the whole results object written at the end."""
    import os

    from stpn_tf.artifacts.results import ResultsWriter, write_results

    workdir, shards = split
    config = LocalizerConfig(interpolation=3, class_threshold=0.2, max_detections=12, max_components_per_class=6)
    model = load_serving_model(workdir, grid=GridConfig(length=8), localizer_config=config, jit_compile=False)
    results, _ = predict.predict_records(model, shards, batch_size=3, keep_raw=False)
    assert sum(len(d) for d in results["results"].values()) > 0
    old, new = str(tmp_path / "old.json"), str(tmp_path / "new" / "detections.json")
    write_results(old, results)
    with ResultsWriter(new) as writer:
        assert predict.predict_records(model, shards, batch_size=3, keep_raw=False, sink=writer.add) == (None, None)
        assert not os.path.exists(new)  # a hidden temporary until the end
    assert writer.num_videos == 7
    with open(old, "rb") as a, open(new, "rb") as b:
        assert a.read() == b.read()
    # A failure on the way (here a video twice) leaves the older file as it was and no temporary.
    with pytest.raises(StpnError, match=f"^{new}: video 'v0' comes twice"):
        with ResultsWriter(new) as writer:
            writer.add({"v0": []})
            writer.add({"v0": []})
    with open(old, "rb") as a, open(new, "rb") as b:
        assert a.read() == b.read()
    assert os.listdir(tmp_path / "new") == ["detections.json"]


def test_localizing_a_dataset_with_a_cut_shard_names_it(split, tmp_path):
    """A shard cut inside its last record's header (a clean end of file for TensorFlow) stops localization
    with one line naming the shard and both counts."""
    import os

    from stpn_tf.artifacts.dataset_dir import DatasetInfo, SplitInfo, write_dataset_info
    from stpn_tf.artifacts.shards import list_shards

    workdir, _ = split
    out = str(tmp_path / "data")
    rng = np.random.default_rng(0)
    examples = [make_example(video_id=f"v{i}", subset="test", rgb=rng.normal(0, 1, (3, D)),
                             flow=rng.normal(0, 1, (3, D)), labels=[0], duration=2.0, fps=25.0, stride_frames=16)
                for i in range(4)]
    with ShardedWriter(out, "test", 2) as writer:
        for example in examples:
            writer.write(example)
    write_dataset_info(out, DatasetInfo(name="t", classes=CLASSES, feature_dim=D, fps=25.0, stride_frames=16,
                                        splits={"test": SplitInfo(4, 12, [os.path.basename(p) for p in writer.shards],
                                                                  shard_records=writer.shard_records)}))
    shards = list_shards(out, "test")
    with open(shards[1], "r+b") as f:  # shard 1: v1, v3; cut 3 bytes into v3's header
        f.truncate(os.path.getsize(shards[1]) - len(examples[3]) - 16 + 3)
    model = load_serving_model(workdir, grid=GridConfig(length=8), jit_compile=False)
    with pytest.raises(StpnError, match=f"^{shards[1]}: holds 1 records but {out}/dataset.json records 2") as info:
        predict.predict_records(model, shards, batch_size=3, keep_raw=False)
    assert "\n" not in str(info.value)

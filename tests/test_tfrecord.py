"""Tests for stpn_tf.data.tfrecord: schema round trip, graph/eager agreement, atomic shards, corrupt files."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.data import tfrecord
from stpn_tf.io.dataset_dir import DatasetInfo, SplitInfo, read_dataset_info, write_dataset_info
from stpn_tf.errors import StpnError

D = 4
C = 5


def _example(video_id="v1", num_snippets=3, labels=(3, 0, 3), seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.normal(size=(num_snippets, D)).astype(np.float32)
    flow = rng.normal(size=(num_snippets, D)).astype(np.float32)
    ser = tfrecord.make_example(video_id=video_id, subset="test", rgb=rgb, flow=flow, labels=labels,
                                duration=12.5, fps=25.0, stride_frames=16)
    return ser, rgb, flow


def _raw_example(num_snippets, rgb_values, flow_values, feature_dim=D, labels=(1,)):
    """An example assembled by hand, so its fields can disagree with each other."""
    f = tf.train.Feature
    feats = {
        "video/id": f(bytes_list=tf.train.BytesList(value=[b"bad_video"])),
        "video/subset": f(bytes_list=tf.train.BytesList(value=[b"train"])),
        "video/num_snippets": f(int64_list=tf.train.Int64List(value=[num_snippets])),
        "video/feature_dim": f(int64_list=tf.train.Int64List(value=[feature_dim])),
        "video/rgb": f(bytes_list=tf.train.BytesList(value=[np.zeros(rgb_values, "<f4").tobytes()])),
        "video/flow": f(bytes_list=tf.train.BytesList(value=[np.zeros(flow_values, "<f4").tobytes()])),
        "video/labels": f(int64_list=tf.train.Int64List(value=list(labels))),
        "video/duration": f(float_list=tf.train.FloatList(value=[1.0])),
        "video/fps": f(float_list=tf.train.FloatList(value=[25.0])),
        "video/stride_frames": f(int64_list=tf.train.Int64List(value=[16])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def test_round_trip_eager_values():
    ser, rgb, flow = _example()
    out = tfrecord.parse_example(tf.constant(ser), num_classes=C, feature_dim=D)
    assert out["video/id"].numpy() == b"v1"
    assert out["video/subset"].numpy() == b"test"
    assert int(out["video/num_snippets"]) == 3
    np.testing.assert_array_equal(out["video/rgb"].numpy(), rgb)
    np.testing.assert_array_equal(out["video/flow"].numpy(), flow)
    # labels (3, 0, 3) -> indices {0, 3} -> multi-hot over 5 classes.
    np.testing.assert_array_equal(out["video/labels"].numpy(), [1, 0, 0, 1, 0])
    assert out["video/duration"].numpy() == pytest.approx(12.5)
    # 16 frames at 25 fps = 0.64 s per snippet.
    assert out["video/seconds_per_snippet"].numpy() == pytest.approx(0.64)


def test_round_trip_inside_dataset_map_agrees_with_eager():
    records = [_example(f"v{i}", num_snippets=i + 1, labels=(i % C,), seed=i)[0] for i in range(4)]
    ds = tf.data.Dataset.from_tensor_slices(records).map(
        lambda s: tfrecord.parse_example(s, num_classes=C, feature_dim=D))
    assert ds.element_spec["video/rgb"].shape.as_list() == [None, D]  # static D
    for ser, graph_out in zip(records, ds):
        eager_out = tfrecord.parse_example(tf.constant(ser), num_classes=C, feature_dim=D)
        assert set(graph_out) == set(eager_out)
        for key in eager_out:
            np.testing.assert_array_equal(graph_out[key].numpy(), eager_out[key].numpy(), err_msg=key)


def test_no_labels_gives_all_zero_multi_hot():
    ser, _, _ = _example(labels=())
    out = tfrecord.parse_example(tf.constant(ser), num_classes=C, feature_dim=D)
    np.testing.assert_array_equal(out["video/labels"].numpy(), np.zeros(C))


def _parse(serialized, graph):
    """parse_example eagerly, or inside Dataset.map when `graph`."""
    if graph:
        ds = tf.data.Dataset.from_tensors(serialized).map(
            lambda s: tfrecord.parse_example(s, num_classes=C, feature_dim=D))
        return next(iter(ds))
    return tfrecord.parse_example(tf.constant(serialized), num_classes=C, feature_dim=D)


@pytest.mark.parametrize("graph", [False, True])
def test_byte_length_inconsistent_with_num_snippets_raises(graph):
    # num_snippets 3 * D 4 = 12 floats expected; rgb has 10.
    ser = _raw_example(3, rgb_values=10, flow_values=12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="video/rgb holds a number of float32"):
        _parse(ser, graph)


def test_flow_length_checked_too():
    ser = _raw_example(3, rgb_values=12, flow_values=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="video/flow"):
        tfrecord.parse_example(tf.constant(ser), num_classes=C, feature_dim=D)


@pytest.mark.parametrize("graph", [False, True])
def test_feature_dim_mismatch_raises(graph):
    # 3 snippets of stored dimension 8 = 24 floats; also divisible by 4, so only the explicit check catches it.
    ser = _raw_example(3, rgb_values=24, flow_values=24, feature_dim=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="video/feature_dim stored in the record"):
        _parse(ser, graph)


def test_label_out_of_range_raises():
    ser = _raw_example(1, rgb_values=D, flow_values=D, labels=(C,))
    with pytest.raises(tf.errors.InvalidArgumentError, match="class index >= num_classes=5"):
        tfrecord.parse_example(tf.constant(ser), num_classes=C, feature_dim=D)


def test_make_example_rejects_bad_shapes():
    with pytest.raises(StpnError, match="v9: rgb \\(3, 4\\) and flow \\(2, 4\\)"):
        tfrecord.make_example(video_id="v9", subset="test", rgb=np.zeros((3, 4)), flow=np.zeros((2, 4)),
                              labels=[0], duration=1.0, fps=25.0, stride_frames=16)
    with pytest.raises(StpnError, match="empty features"):
        tfrecord.make_example(video_id="v9", subset="test", rgb=np.zeros((0, 4)), flow=np.zeros((0, 4)),
                              labels=[0], duration=1.0, fps=25.0, stride_frames=16)


def test_sharded_writer_round_robin_and_list_shards(tmp_path):
    out = str(tmp_path)
    records = [_example(f"v{i}", seed=i)[0] for i in range(7)]
    with tfrecord.ShardedWriter(out, "train", 3) as w:
        for r in records:
            w.write(r)
    # 7 records round-robin over 3 shards: 3, 2, 2.
    assert w.counts == [3, 2, 2] and w.num_written == 7
    shards = tfrecord.list_shards(out, "train")
    assert [os.path.basename(p) for p in shards] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    assert shards == w.shards
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in shards)  # no temporaries left
    got = sorted(tfrecord.read_records(shards))
    assert got == sorted(records)
    got_ds = sorted(r.numpy() for r in tfrecord.tfrecord_dataset(shards))
    assert got_ds == sorted(records)


def test_sharded_writer_exception_leaves_nothing(tmp_path):
    out = str(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with tfrecord.ShardedWriter(out, "train", 2) as w:
            w.write(_example()[0])
            raise RuntimeError("boom")
    assert os.listdir(out) == []
    with pytest.raises(StpnError, match="no TFRecord shards for split 'train'"):
        tfrecord.list_shards(out, "train")


def test_killed_writer_leaves_only_hidden_temporaries(tmp_path):
    out = str(tmp_path)
    w = tfrecord.ShardedWriter(out, "test", 2)
    w.__enter__()
    w.write(_example()[0])
    for writer in w._writers:  # simulate the process dying: files flushed, never renamed
        writer.flush()
    names = os.listdir(out)
    assert len(names) == 2 and all(n.startswith(".") and ".tmp-" in n for n in names)
    with pytest.raises(StpnError, match="no TFRecord shards"):
        tfrecord.list_shards(out, "test")
    # The next writer on that split cleans the leftovers.
    with tfrecord.ShardedWriter(out, "test", 1) as w2:
        w2.write(_example()[0])
    assert sorted(os.listdir(out)) == ["test-00000-of-00001.tfrecord"]


def test_rewrite_with_other_shard_count_replaces_old_set(tmp_path):
    out = str(tmp_path)
    for n in (4, 2):
        with tfrecord.ShardedWriter(out, "train", n) as w:
            for i in range(5):
                w.write(_example(f"v{i}")[0])
    with tfrecord.ShardedWriter(out, "test", 1) as w:
        w.write(_example("t")[0])
    assert sorted(os.listdir(out)) == ["test-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]


def test_list_shards_incomplete_set(tmp_path):
    out = str(tmp_path)
    with tfrecord.ShardedWriter(out, "train", 3) as w:
        w.write(_example()[0])
    os.remove(os.path.join(out, "train-00001-of-00003.tfrecord"))
    with pytest.raises(StpnError, match="missing shard\\(s\\) train-00001-of-00003.tfrecord"):
        tfrecord.list_shards(out, "train")
    with pytest.raises(StpnError, match="does not exist"):
        tfrecord.list_shards(os.path.join(out, "nope"), "train")


def _write_good_and_bad(tmp_path, damage):
    out = str(tmp_path)
    with tfrecord.ShardedWriter(out, "train", 2) as w:
        for i in range(6):
            w.write(_example(f"v{i}", num_snippets=20, seed=i)[0])
    good, bad = w.shards
    data = bytearray(open(bad, "rb").read())
    if damage == "truncate":
        data = data[: len(data) - 50]
    else:  # flip a byte inside the second record's payload: its CRC no longer matches
        data[len(data) // 2] ^= 0xFF
    with open(bad, "wb") as f:
        f.write(bytes(data))
    return good, bad


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_file_error_names_the_file(tmp_path, damage):
    good, bad = _write_good_and_bad(tmp_path, damage)
    with pytest.raises(StpnError, match=f"^{bad}: corrupt or truncated TFRecord file"):
        list(tfrecord.read_records([good, bad]))
    # Same through the interleaved dataset the training pipeline uses.
    ds = tfrecord.tfrecord_dataset([good, bad]).map(
        lambda s: tfrecord.parse_example(s, num_classes=C, feature_dim=D))
    with pytest.raises(StpnError, match=f"^{bad}: corrupt") as info:
        with tfrecord.corrupt_record_errors([good, bad]):
            for _ in ds:
                pass
    assert "\n" not in str(info.value)
    assert tfrecord.find_corrupt_file([good]) is None


def test_read_records_missing_file(tmp_path):
    path = str(tmp_path / "nope.tfrecord")
    with pytest.raises(StpnError, match="nope.tfrecord: TFRecord file not found"):
        list(tfrecord.read_records([path]))


def test_dataset_info_read_write(tmp_path):
    d = str(tmp_path)
    with pytest.raises(StpnError, match="dataset metadata not found"):
        read_dataset_info(d)
    with pytest.raises(StpnError, match="nowhere: dataset directory not found"):
        read_dataset_info(str(tmp_path / "nowhere"))
    path = tmp_path / "dataset.json"
    path.write_text("{not json")
    with pytest.raises(StpnError, match="dataset.json: malformed JSON"):
        read_dataset_info(d)
    meta = {"name": "x", "classes": ["a", "b"], "feature_dim": 4, "fps": 25.0, "stride_frames": 16,
            "splits": {"train": {"num_videos": 2, "shards": ["train-00000-of-00001.tfrecord"]}},
            "sources": []}
    path.write_text(json.dumps({k: v for k, v in meta.items() if k != "feature_dim"}))
    with pytest.raises(StpnError, match="missing key 'feature_dim'"):
        read_dataset_info(d)
    path.write_text(json.dumps({**meta, "fps": "25"}))
    with pytest.raises(StpnError, match="key 'fps' has the wrong type str"):
        read_dataset_info(d)
    path.write_text(json.dumps(meta))
    info = read_dataset_info(d)
    assert info == DatasetInfo(name="x", classes=["a", "b"], feature_dim=4, fps=25.0, stride_frames=16,
                               splits={"train": SplitInfo(2, 0, ["train-00000-of-00001.tfrecord"])})
    # The writer and the reader agree, and the file is written atomically (no temporary left).
    write_dataset_info(d, info.with_split("test", SplitInfo(1, 7, ["test-00000-of-00001.tfrecord"])))
    again = read_dataset_info(d)
    assert list(again.splits) == ["test", "train"] and again.splits["test"].num_snippets == 7
    assert sorted(os.listdir(d)) == ["dataset.json"]


def test_parse_one_stream_only():
    ser, rgb, _ = _example()
    ds = tf.data.Dataset.from_tensors(ser).map(
        lambda s: tfrecord.parse_example(s, num_classes=C, feature_dim=D, streams=("rgb",)))
    out = next(iter(ds))
    assert "video/flow" not in out
    np.testing.assert_array_equal(out["video/rgb"].numpy(), rgb)
    # The skipped stream is not checked either: a bad flow length goes unnoticed, a bad rgb one does not.
    bad_flow = _raw_example(3, rgb_values=12, flow_values=5)
    assert tfrecord.parse_example(tf.constant(bad_flow), num_classes=C, feature_dim=D,
                                  streams=("rgb",))["video/rgb"].shape == (3, D)
    with pytest.raises(ValueError, match="streams must be"):
        tfrecord.parse_example(tf.constant(ser), num_classes=C, feature_dim=D, streams=("depth",))

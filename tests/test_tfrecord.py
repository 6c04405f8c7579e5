"""Tests for stpn_tf.data.records and stpn_tf.artifacts.shards: schema round trip, graph/eager agreement,
atomic shards, corrupt files."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.artifacts.shards import list_shards, storage_of
from stpn_tf.data.records.decoder import parse_example
from stpn_tf.data.records.reader import corrupt_record_errors, find_corrupt_file, read_records, tfrecord_dataset
from stpn_tf.data.records.schema import make_example, make_stream_examples, split_example
from stpn_tf.data.records.writer import ShardedWriter
from stpn_tf.artifacts.dataset_dir import DatasetInfo, SplitInfo, read_dataset_info, write_dataset_info
from stpn_tf.core.errors import StpnError

D = 4
C = 5


def _example(video_id="v1", num_snippets=3, labels=(3, 0, 3), seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.normal(size=(num_snippets, D)).astype(np.float32)
    flow = rng.normal(size=(num_snippets, D)).astype(np.float32)
    ser = make_example(video_id=video_id, subset="test", rgb=rgb, flow=flow, labels=labels,
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
    out = parse_example(tf.constant(ser), num_classes=C, feature_dim=D)
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
        lambda s: parse_example(s, num_classes=C, feature_dim=D))
    assert ds.element_spec["video/rgb"].shape.as_list() == [None, D]  # static D
    for ser, graph_out in zip(records, ds):
        eager_out = parse_example(tf.constant(ser), num_classes=C, feature_dim=D)
        assert set(graph_out) == set(eager_out)
        for key in eager_out:
            np.testing.assert_array_equal(graph_out[key].numpy(), eager_out[key].numpy(), err_msg=key)


def test_no_labels_gives_all_zero_multi_hot():
    ser, _, _ = _example(labels=())
    out = parse_example(tf.constant(ser), num_classes=C, feature_dim=D)
    np.testing.assert_array_equal(out["video/labels"].numpy(), np.zeros(C))


def _parse(serialized, graph):
    """parse_example eagerly, or inside Dataset.map when `graph`."""
    if graph:
        ds = tf.data.Dataset.from_tensors(serialized).map(
            lambda s: parse_example(s, num_classes=C, feature_dim=D))
        return next(iter(ds))
    return parse_example(tf.constant(serialized), num_classes=C, feature_dim=D)


@pytest.mark.parametrize("graph", [False, True])
def test_byte_length_inconsistent_with_num_snippets_raises(graph):
    # num_snippets 3 * D 4 = 12 floats expected; rgb has 10.
    ser = _raw_example(3, rgb_values=10, flow_values=12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="video/rgb holds a number of float32"):
        _parse(ser, graph)


def test_flow_length_checked_too():
    ser = _raw_example(3, rgb_values=12, flow_values=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="video/flow"):
        parse_example(tf.constant(ser), num_classes=C, feature_dim=D)


@pytest.mark.parametrize("graph", [False, True])
def test_feature_dim_mismatch_raises(graph):
    # 3 snippets of stored dimension 8 = 24 floats; also divisible by 4, so only the explicit check catches it.
    ser = _raw_example(3, rgb_values=24, flow_values=24, feature_dim=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="video/feature_dim stored in the record"):
        _parse(ser, graph)


def test_label_out_of_range_raises():
    ser = _raw_example(1, rgb_values=D, flow_values=D, labels=(C,))
    with pytest.raises(tf.errors.InvalidArgumentError, match="class index >= num_classes=5"):
        parse_example(tf.constant(ser), num_classes=C, feature_dim=D)


def test_make_example_rejects_bad_shapes():
    with pytest.raises(StpnError, match="v9: rgb \\(3, 4\\) and flow \\(2, 4\\)"):
        make_example(video_id="v9", subset="test", rgb=np.zeros((3, 4)), flow=np.zeros((2, 4)),
                     labels=[0], duration=1.0, fps=25.0, stride_frames=16)
    with pytest.raises(StpnError, match="empty features"):
        make_example(video_id="v9", subset="test", rgb=np.zeros((0, 4)), flow=np.zeros((0, 4)),
                     labels=[0], duration=1.0, fps=25.0, stride_frames=16)


def test_sharded_writer_round_robin_and_list_shards(tmp_path):
    out = str(tmp_path)
    records = [_example(f"v{i}", seed=i)[0] for i in range(7)]
    with ShardedWriter(out, "train", 3) as w:
        for r in records:
            w.write(r)
    # 7 records round-robin over 3 shards: 3, 2, 2.
    assert w.counts == [3, 2, 2] and w.num_written == 7
    shards = list_shards(out, "train")
    assert [os.path.basename(p) for p in shards] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    assert shards == w.shards
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in shards)  # no temporaries left
    got = sorted(read_records(shards))
    assert got == sorted(records)
    got_ds = sorted(r.numpy() for r in tfrecord_dataset(shards))
    assert got_ds == sorted(records)


def test_sharded_writer_exception_leaves_nothing(tmp_path):
    out = str(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with ShardedWriter(out, "train", 2) as w:
            w.write(_example()[0])
            raise RuntimeError("boom")
    assert os.listdir(out) == []
    with pytest.raises(StpnError, match="no TFRecord shards for split 'train'"):
        list_shards(out, "train")


def test_killed_writer_leaves_only_hidden_temporaries(tmp_path):
    out = str(tmp_path)
    w = ShardedWriter(out, "test", 2)
    w.__enter__()
    w.write(_example()[0])
    for writer in w._writers:  # simulate the process dying: files flushed, never renamed
        writer.flush()
    names = os.listdir(out)
    assert len(names) == 2 and all(n.startswith(".") and ".tmp-" in n for n in names)
    with pytest.raises(StpnError, match="no TFRecord shards"):
        list_shards(out, "test")
    # The next writer on that split cleans the leftovers.
    with ShardedWriter(out, "test", 1) as w2:
        w2.write(_example()[0])
    assert sorted(os.listdir(out)) == ["test-00000-of-00001.tfrecord"]


def test_rewrite_with_other_shard_count_replaces_old_set(tmp_path):
    out = str(tmp_path)
    for n in (4, 2):
        with ShardedWriter(out, "train", n) as w:
            for i in range(5):
                w.write(_example(f"v{i}")[0])
    with ShardedWriter(out, "test", 1) as w:
        w.write(_example("t")[0])
    assert sorted(os.listdir(out)) == ["test-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]


def test_list_shards_incomplete_set(tmp_path):
    out = str(tmp_path)
    with ShardedWriter(out, "train", 3) as w:
        w.write(_example()[0])
    os.remove(os.path.join(out, "train-00001-of-00003.tfrecord"))
    with pytest.raises(StpnError, match="missing shard\\(s\\) train-00001-of-00003.tfrecord"):
        list_shards(out, "train")
    with pytest.raises(StpnError, match="does not exist"):
        list_shards(os.path.join(out, "nope"), "train")


def _write_good_and_bad(tmp_path, damage):
    out = str(tmp_path)
    with ShardedWriter(out, "train", 2) as w:
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
        list(read_records([good, bad]))
    # Same through the interleaved dataset the training pipeline uses (loose shards, no dataset.json: a cut
    # file fails its framing scan when the dataset is made, a flipped byte when it is read).
    with pytest.raises(StpnError, match=f"^{bad}: corrupt") as info:
        with corrupt_record_errors([good, bad]):
            ds = tfrecord_dataset([good, bad]).map(lambda s: parse_example(s, num_classes=C, feature_dim=D))
            for _ in ds:
                pass
    assert "\n" not in str(info.value)
    assert find_corrupt_file([good]) is None


def test_read_records_missing_file(tmp_path):
    path = str(tmp_path / "nope.tfrecord")
    with pytest.raises(StpnError, match="nope.tfrecord: TFRecord file not found"):
        list(read_records([path]))


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
        lambda s: parse_example(s, num_classes=C, feature_dim=D, streams=("rgb",)))
    out = next(iter(ds))
    assert "video/flow" not in out
    np.testing.assert_array_equal(out["video/rgb"].numpy(), rgb)
    # The skipped stream is not checked either: a bad flow length goes unnoticed, a bad rgb one does not.
    bad_flow = _raw_example(3, rgb_values=12, flow_values=5)
    assert parse_example(tf.constant(bad_flow), num_classes=C, feature_dim=D,
                         streams=("rgb",))["video/rgb"].shape == (3, D)
    with pytest.raises(ValueError, match="streams must be"):
        parse_example(tf.constant(ser), num_classes=C, feature_dim=D, streams=("depth",))


# --------------------------------------------------------------------------------------------------
# The by_stream storage: each stream in its own shards.


def _video(video_id="v1", num_snippets=3, labels=(3, 0, 3), seed=0):
    rng = np.random.default_rng(seed)
    return dict(video_id=video_id, subset="train", rgb=rng.normal(size=(num_snippets, D)).astype(np.float32),
                flow=rng.normal(size=(num_snippets, D)).astype(np.float32), labels=labels, duration=12.5,
                fps=25.0, stride_frames=16)


def _parsed(serialized, streams=("rgb", "flow")):
    out = parse_example(tf.constant(serialized), num_classes=C, feature_dim=D, streams=streams)
    return {k: v.numpy() for k, v in out.items()}


def test_stream_records_join_into_the_combined_example():
    video = _video()
    combined = make_example(**video)
    records = make_stream_examples(**video)
    assert sorted(records) == ["flow", "rgb"]
    rgb_only = tf.train.Example.FromString(records["rgb"]).features.feature
    assert "video/flow" not in rgb_only and "video/rgb" in rgb_only and "video/labels" in rgb_only
    # rgb + flow bytes = a serialized Example equal to the combined one, field for field.
    joined = records["rgb"] + records["flow"]
    assert tf.train.Example.FromString(joined).SerializeToString(deterministic=True) == combined
    whole, parsed_joined = _parsed(combined), _parsed(joined)
    assert set(whole) == set(parsed_joined)
    for key in whole:
        np.testing.assert_array_equal(parsed_joined[key], whole[key], err_msg=key)
    # One stream's record parses to what the combined record gives for that stream.
    for stream in ("rgb", "flow"):
        one = _parsed(records[stream], streams=(stream,))
        np.testing.assert_array_equal(one[f"video/{stream}"], video[stream])
        np.testing.assert_array_equal(one["video/labels"], [1, 0, 0, 1, 0])
    # Splitting a combined example gives the same bytes as writing it by stream.
    assert split_example(combined) == records
    with pytest.raises(StpnError, match="lacks video/flow"):
        split_example(records["rgb"])


def _write_both(tmp_path, num_videos=7, num_shards=3):
    """The same videos in both storages; returns (combined dir, by_stream dir)."""
    a, b = str(tmp_path / "combined"), str(tmp_path / "by_stream")
    with ShardedWriter(a, "train", num_shards) as wa, \
            ShardedWriter(b, "train", num_shards, storage="by_stream") as wb:
        for i in range(num_videos):
            video = _video(f"v{i}", num_snippets=i + 1, labels=(i % C,), seed=i)
            wa.write(make_example(**video))
            # Either form goes into a by_stream writer.
            wb.write(make_stream_examples(**video) if i % 2 else make_example(**video))
    assert wb.counts == wa.counts == [3, 2, 2]
    return a, b


def test_by_stream_writer_names_list_shards_and_reads_back_combined_records(tmp_path):
    a, b = _write_both(tmp_path)
    names = [f"train-{s}-0000{i}-of-00003.tfrecord" for s in ("rgb", "flow") for i in range(3)]
    assert [os.path.basename(p) for p in list_shards(b, "train")] == names
    assert sorted(os.listdir(b)) == sorted(names)
    assert storage_of(list_shards(b, "train")) == "by_stream"
    assert storage_of(list_shards(a, "train")) == "combined"
    combined = list(read_records(list_shards(a, "train")))
    joined = list(read_records(list_shards(b, "train")))
    assert [tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in joined] == combined
    # The interleaved dataset gives the same videos in the same order, shuffled or not.
    for shuffle in (False, True):
        got = [r.numpy() for r in tfrecord_dataset(list_shards(b, "train"),
                                                   shuffle_files=shuffle, seed=3)]
        want = [r.numpy() for r in tfrecord_dataset(list_shards(a, "train"),
                                                    shuffle_files=shuffle, seed=3)]
        assert [tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in got] == want
    # One stream asked for: that stream's records as stored, and the other stream's files are not read.
    for path in list_shards(b, "train")[3:]:
        os.remove(path)
    rgb = [r.numpy() for r in tfrecord_dataset([os.path.join(b, n) for n in names[:3]], streams=("rgb",))]
    in_order = [r.numpy() for r in tfrecord_dataset(list_shards(a, "train"))]
    assert rgb == [split_example(r)["rgb"] for r in in_order]


def test_rewrite_in_the_other_storage_replaces_the_split(tmp_path):
    out = str(tmp_path)
    for storage in ("combined", "by_stream", "combined"):
        with ShardedWriter(out, "train", 2, storage=storage) as w:
            for i in range(3):
                w.write(make_example(**_video(f"v{i}")))
        assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in w.shards)
    assert len(list_shards(out, "train")) == 2
    with pytest.raises(StpnError, match="invalid split name 'train-rgb'"):
        ShardedWriter(out, "train-rgb", 1)
    with pytest.raises(StpnError, match="storage must be one of by_stream, combined, got 'float16'"):
        ShardedWriter(out, "train", 1, storage="float16")


def test_list_shards_missing_stream_incomplete_stream_and_mixed_storages(tmp_path):
    _, b = _write_both(tmp_path)
    flow = [os.path.join(b, f"train-flow-0000{i}-of-00003.tfrecord") for i in range(3)]
    os.remove(flow[1])
    with pytest.raises(StpnError, match="missing shard\\(s\\) train-flow-00001-of-00003.tfrecord$"):
        list_shards(b, "train")
    for path in flow[::2]:
        os.remove(path)
    with pytest.raises(StpnError, match=f"^{b}: split 'train' has rgb shards but no flow shards \\(missing "
                                        "train-flow-00000-of-00003.tfrecord ... train-flow-00002-of-00003.tfrecord\\)"):
        list_shards(b, "train")
    with ShardedWriter(str(tmp_path / "other"), "train", 1) as w:
        w.write(make_example(**_video()))
    os.rename(w.shards[0], os.path.join(b, "train-00000-of-00001.tfrecord"))
    with pytest.raises(StpnError, match="has both combined shards .* and by-stream shards"):
        list_shards(b, "train")
    # A list of files with an rgb shard whose flow shard is not in it.
    rgb0 = os.path.join(b, "train-rgb-00000-of-00003.tfrecord")
    with pytest.raises(StpnError, match=f"^{rgb0}: its flow counterpart .*train-flow-00000-of-00003.tfrecord is not "
                                        "among the files to read"):
        tfrecord_dataset([rgb0])


def _swap_flow_records(b):
    """Rewrites flow shard 0 with its first two records swapped: shard 0 of the streams then disagree."""
    path = os.path.join(b, "train-flow-00000-of-00003.tfrecord")
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    with tf.io.TFRecordWriter(path) as w:
        for r in [records[1], records[0], *records[2:]]:
            w.write(r)
    return os.path.join(b, "train-rgb-00000-of-00003.tfrecord"), path


def test_mismatched_video_ids_between_streams_name_the_files(tmp_path):
    _, b = _write_both(tmp_path)
    shards = list_shards(b, "train")
    rgb, flow = _swap_flow_records(b)
    # Shard 0 holds v0, v3, v6 (round-robin over 3 shards).
    message = f"^{flow}: record 0 is video 'v3' but record 0 of {rgb} is 'v0' \\(the rgb and flow shards"
    with pytest.raises(StpnError, match=message) as info:
        list(read_records(shards))
    assert "\n" not in str(info.value)
    ds = tfrecord_dataset(shards).map(lambda s: parse_example(s, num_classes=C, feature_dim=D))
    with pytest.raises(StpnError, match=message):
        with corrupt_record_errors(shards):
            for _ in ds:
                pass


def test_stream_shard_with_a_record_less_names_the_files(tmp_path):
    _, b = _write_both(tmp_path)
    shards = list_shards(b, "train")
    flow = os.path.join(b, "train-flow-00001-of-00003.tfrecord")
    records = [r.numpy() for r in tf.data.TFRecordDataset(flow)]
    with tf.io.TFRecordWriter(flow) as w:
        w.write(records[0])
    with pytest.raises(StpnError, match=f"^{flow}: 1 records but .*train-rgb-00001-of-00003.tfrecord has 2"):
        list(read_records(shards))


def test_truncated_stream_shard_names_the_file(tmp_path):
    _, b = _write_both(tmp_path)
    shards = list_shards(b, "train")
    bad = os.path.join(b, "train-flow-00002-of-00003.tfrecord")
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) - 9)
    with pytest.raises(StpnError, match=f"^{bad}: corrupt or truncated TFRecord file"):
        list(read_records(shards))
    with pytest.raises(StpnError, match=f"^{bad}: corrupt or truncated TFRecord file"):
        with corrupt_record_errors(shards):
            for _ in tfrecord_dataset(shards, streams=("flow",)):
                pass


# ------------------------------------------------- record counts: every shard read against dataset.json

def _counted_dataset(out, records, *, num_shards=1, storage="combined", counts=True):
    """A dataset directory of `records` (serialized; raw bytes in the combined storage: nothing parses
    them) whose dataset.json records the shard counts (or, `counts=False`, not: a dataset built before)."""
    with ShardedWriter(out, "train", num_shards, storage=storage) as w:
        for record in records:
            w.write(record)
    names = [os.path.basename(p) for p in w.shards]
    write_dataset_info(out, DatasetInfo(name="t", classes=["a", "b", "c", "d", "e"], feature_dim=D, fps=25.0,
                                        stride_frames=16, splits={"train": SplitInfo(
                                            len(records), 0, names, shard_records=w.shard_records if counts else {})}))
    return list_shards(out, "train")


def _read_all(paths, **kwargs):
    """Every record through the graph path (as training and localization read), then through read_records."""
    with corrupt_record_errors(paths):
        got = [r.numpy() for r in tfrecord_dataset(paths, **kwargs)]
    assert sorted(read_records(paths)) == sorted(got) if not kwargs else True
    return got


def _one_line_error(path, match, call):
    with pytest.raises(StpnError, match=match) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def test_shard_records_written_and_read_back(tmp_path):
    (path,) = _counted_dataset(str(tmp_path), [b"r0", b"r1", b"r2"])
    assert read_dataset_info(str(tmp_path)).splits["train"].shard_records == {"train-00000-of-00001.tfrecord": 3}
    assert _read_all([path]) == [b"r0", b"r1", b"r2"]
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["splits"]["train"]["shard_records"] = {"other.tfrecord": 3}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(StpnError, match="'shard_records' names other files than 'shards'"):
        read_dataset_info(str(tmp_path))


def test_shard_cut_at_every_byte_of_its_last_record_names_the_file_and_both_counts(tmp_path):
    """TensorFlow reads a file cut inside a record's 12-byte header as a clean end: the recorded count
    catches it, and a cut anywhere in the header, data or data CRC gives one line naming the shard."""
    (path,) = _counted_dataset(str(tmp_path), [b"first---", b"second--", b"third---"])
    whole = open(path, "rb").read()
    assert len(whole) == 3 * (12 + 8 + 4)
    start = 2 * 24  # the last record: header [48, 60), data [60, 68), data CRC [68, 72)
    for cut in range(start, len(whole)):
        with open(path, "wb") as f:
            f.write(whole[:cut])
        if cut < start + 12:  # inside the header (or at its start): TF reads two records and no error
            assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == [b"first---", b"second--"]
            match = (f"holds 2 records but {tmp_path}/dataset.json records 3 \\(a truncated or altered shard\\); "
                     "rebuild the dataset$")
        else:  # inside the data or its CRC: TF's DataLossError, named with the counts
            match = (f"corrupt or truncated TFRecord file \\(.*\\); 2 records readable, {tmp_path}/dataset.json "
                     "records 3; rebuild the dataset$")
        _one_line_error(path, match, lambda: _read_all([path]))
        _one_line_error(path, match, lambda: list(read_records([path])))


def test_shard_with_an_extra_record_names_the_file_and_both_counts(tmp_path):
    paths = _counted_dataset(str(tmp_path), [b"a", b"b", b"c", b"d", b"e"], num_shards=2)
    with tf.io.TFRecordWriter(paths[1]) as w:  # shard 1 held b, d; now also an extra record
        for record in (b"b", b"d", b"extra"):
            w.write(record)
    match = f"holds 3 records but {tmp_path}/dataset.json records 2"
    _one_line_error(paths[1], match, lambda: _read_all(paths))
    _one_line_error(paths[1], match, lambda: list(read_records(paths)))


def test_missing_shard_names_the_file(tmp_path):
    paths = _counted_dataset(str(tmp_path), [b"a", b"b", b"c"], num_shards=2)
    os.remove(paths[1])
    with pytest.raises(StpnError, match=f"^{tmp_path}: split 'train' is incomplete, missing shard\\(s\\) "
                                        "train-00001-of-00002.tfrecord$"):
        list_shards(str(tmp_path), "train")
    _one_line_error(paths[1], "TFRecord file not found$", lambda: tfrecord_dataset(paths))
    _one_line_error(paths[1], "TFRecord file not found$", lambda: list(read_records(paths)))


def test_shard_not_listed_by_a_counting_dataset_json_names_the_file(tmp_path):
    paths = _counted_dataset(str(tmp_path), [b"a", b"b"])
    with ShardedWriter(str(tmp_path / "other"), "train", 2) as w:
        w.write(b"x")
    stranger = os.path.join(str(tmp_path), "train-00001-of-00002.tfrecord")
    os.rename(w.shards[1], stranger)
    _one_line_error(stranger, "dataset.json does not list this shard", lambda: tfrecord_dataset([paths[0], stranger]))


@pytest.mark.parametrize("storage", ["by_stream", "combined"])
def test_one_stream_and_joint_reads_check_the_counts(tmp_path, storage):
    """The issue's case: a by_stream rgb shard cut 5 bytes into its last record's header, read by one-stream
    training (rgb only), joint training and localization (both streams)."""
    from stpn_tf.data.pipeline import make_train_dataset

    videos = [_video(f"v{i}", num_snippets=2, labels=(i % C,), seed=i) for i in range(5)]
    make = make_stream_examples if storage == "by_stream" else make_example
    paths = _counted_dataset(str(tmp_path), [make(**v) for v in videos], num_shards=2, storage=storage)
    bad = paths[0]  # rgb shard 0 (by_stream): v0, v2, v4
    size = os.path.getsize(bad)
    last = len(make_stream_examples(**videos[4])["rgb"] if storage == "by_stream" else make_example(**videos[4]))
    with open(bad, "r+b") as f:
        f.truncate(size - (last + 16) + 5)
    match = f"holds 2 records but {tmp_path}/dataset.json records 3"
    for stream in ("rgb", "joint"):
        def train():
            with corrupt_record_errors(paths):
                for _ in make_train_dataset(paths, stream=stream, num_classes=C, feature_dim=D, num_snippets=4,
                                            batch_size=1, repeat=False):
                    pass
        _one_line_error(bad, match, train)
    _one_line_error(bad, match, lambda: _read_all(paths))


def test_dataset_without_recorded_counts_checks_the_framing_and_warns(tmp_path, caplog):
    """A dataset built before the counts were recorded: each file read is walked once (its record headers);
    a record cut anywhere fails in one line naming the file, and one warning line says what is not checked."""
    (path,) = _counted_dataset(str(tmp_path), [b"first---", b"second--", b"third---"], counts=False)
    whole = open(path, "rb").read()
    with caplog.at_level("WARNING"):
        assert _read_all([path]) == [b"first---", b"second--", b"third---"]
    warnings = [r.getMessage() for r in caplog.records if "records no per-shard record counts" in r.getMessage()]
    assert warnings and warnings[0].startswith(f"{tmp_path}/dataset.json records no per-shard record counts")
    for cut in range(49, len(whole)):  # anywhere after the first byte of the last record
        with open(path, "wb") as f:
            f.write(whole[:cut])
        message = _one_line_error(path, "corrupt or truncated TFRecord file", lambda: tfrecord_dataset([path]))
        assert "after 2 complete record(s)" in message
        _one_line_error(path, "corrupt or truncated TFRecord file", lambda: list(read_records([path])))
    with open(path, "wb") as f:  # cut exactly between two records: what the framing cannot see
        f.write(whole[:48])
    assert _read_all([path]) == [b"first---", b"second--"]

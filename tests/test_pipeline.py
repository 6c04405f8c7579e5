"""tf.data pipelines: sampling indices by hand, eager vs Dataset.map, what reaches training."""

import os

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.artifacts.shards import list_shards
from stpn_tf.data import pipeline
from stpn_tf.data.records.reader import corrupt_record_errors
from stpn_tf.data.records.schema import make_example
from stpn_tf.data.records.writer import ShardedWriter
from stpn_tf.core.errors import StpnError


@pytest.mark.parametrize("length", [1, 3, 399, 400, 401, 800, 1234])
def test_train_indices_stay_in_their_strata(length):
    grid = 400
    idx = pipeline.train_indices(length, grid, tf.constant([7, 11], tf.int64)).numpy()
    p = np.arange(grid + 1) * length / grid
    low = np.floor(p[:-1])
    high = np.append(np.floor(p[1:-1]), length - 1)
    assert idx.shape == (grid,)
    assert np.all(idx >= low) and np.all(idx <= high) and np.all(idx <= length - 1)


def test_train_indices_by_hand_and_randomness():
    # L = 800, T = 400: stratum i is [2i, 2i + 2] for i < 399, and [798, 799] for the last one.
    draws = np.stack([pipeline.train_indices(800, 400, tf.constant([s, 0], tf.int64)).numpy() for s in range(200)])
    assert set(np.unique(draws[:, 10])) == {20, 21, 22}
    assert set(np.unique(draws[:, 399])) == {798, 799}
    # The same seed gives the same draw; a different seed a different one.
    a = pipeline.train_indices(800, 400, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(a, pipeline.train_indices(800, 400, tf.constant([1, 2], tf.int64)).numpy())
    assert not np.array_equal(a, pipeline.train_indices(800, 400, tf.constant([1, 3], tf.int64)).numpy())


def test_sampling_eager_equals_dataset_map():
    seed = tf.constant([5, 6], tf.int64)
    eager = pipeline.train_indices(517, 400, seed).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(517).map(lambda n: pipeline.train_indices(n, 400, seed))))
    np.testing.assert_array_equal(eager, mapped.numpy())


def _write(tmp_path, lengths, d=3, c=4, storage="combined", num_shards=2):
    with ShardedWriter(str(tmp_path), "train", num_shards, storage=storage) as w:
        for i, n in enumerate(lengths):
            # Feature value = snippet index (+0.5 in flow), so sampled indices are visible in the batch.
            rgb = np.repeat(np.arange(n, dtype=np.float32)[:, None], d, axis=1)
            w.write(make_example(video_id=f"v{i}", subset="train", rgb=rgb, flow=rgb + 0.5,
                                 labels=[i % c], duration=n * 0.64, fps=25.0, stride_frames=16))
    return w.shards


def test_train_dataset_yields_only_features_and_labels(tmp_path):
    shards = _write(tmp_path, [5, 9, 700, 2])
    ds = pipeline.make_train_dataset(shards, stream="flow", num_classes=4, feature_dim=3, num_snippets=8,
                                     batch_size=3, seed=1)
    inputs, labels = next(iter(ds))
    assert set(inputs) == {"features", "mask"}  # no ids, durations or anything temporal
    assert inputs["features"].shape == (3, 8, 3) and labels.shape == (3, 4)
    np.testing.assert_array_equal(inputs["mask"].numpy(), np.ones((3, 8)))
    np.testing.assert_array_equal(labels.numpy().sum(axis=1), [1, 1, 1])
    # Flow features are index + 0.5, and indices are non-decreasing along time.
    f = inputs["features"].numpy()[..., 0] - 0.5
    assert np.all(np.diff(f, axis=1) >= 0) and np.all(f == np.round(f))
    # Repeatable from the seed.
    again = next(iter(pipeline.make_train_dataset(shards, stream="flow", num_classes=4, feature_dim=3,
                                                  num_snippets=8, batch_size=3, seed=1)))
    np.testing.assert_array_equal(again[0]["features"].numpy(), inputs["features"].numpy())


def test_feature_cache_is_repeatable_and_still_random(tmp_path):
    shards = _write(tmp_path, [5, 9, 30, 2])
    make = lambda: pipeline.make_train_dataset(  # noqa: E731
        shards, stream="rgb", num_classes=4, feature_dim=3, num_snippets=8, batch_size=2, seed=3, cache=True)
    # Several epochs' worth of batches: the cache replays decoded features (the file order of the first
    # epoch), while shuffling and snippet sampling stay random and seeded.
    first = [b[0]["features"].numpy() for b in make().take(8)]
    second = [b[0]["features"].numpy() for b in make().take(8)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in first}) > 4
    for batch in first:  # every row is a snippet index of a real video, non-decreasing along time
        f = batch[..., 0]
        assert np.all(f == np.round(f)) and np.all(np.diff(f, axis=1) >= 0) and f.max() < 30


def _random_videos(tmp_path, storage, num_videos=9, d=3):
    """The same random videos (lengths 1..40) in one storage; returns list_shards' paths."""
    out = str(tmp_path / storage)
    rng = np.random.default_rng(0)
    with ShardedWriter(out, "train", 3, storage=storage) as w:
        for i in range(num_videos):
            n = int(rng.integers(1, 41))
            w.write(make_example(video_id=f"v{i}", subset="train",
                                 rgb=rng.standard_normal((n, d)).astype(np.float32),
                                 flow=rng.standard_normal((n, d)).astype(np.float32), labels=[i % 4],
                                 duration=n * 0.64, fps=25.0, stride_frames=16))
    return list_shards(out, "train")


def _batches(shards, stream, n=7, **kwargs):
    ds = pipeline.make_train_dataset(shards, stream=stream, num_classes=4, feature_dim=3, num_snippets=8,
                                     batch_size=2, shuffle_buffer=4, seed=5, **kwargs)
    return [(x["features"].numpy(), y.numpy()) for x, y in ds.take(n)]


@pytest.mark.parametrize("stream", ["rgb", "flow", "joint"])
def test_train_batches_identical_between_storages(tmp_path, stream):
    combined, by_stream = _random_videos(tmp_path, "combined"), _random_videos(tmp_path, "by_stream")
    assert len(by_stream) == 2 * len(combined) == 6
    # 7 batches of 2 from 9 videos: past the end of the first epoch (file reshuffle, video reshuffle).
    for kwargs in ({}, {"skip_batches": 3}, {"cache": True}):
        a, b = _batches(combined, stream, **kwargs), _batches(by_stream, stream, **kwargs)
        for (fa, la), (fb, lb) in zip(a, b):
            np.testing.assert_array_equal(fa, fb)
            np.testing.assert_array_equal(la, lb)
        assert a[0][0].shape == (2, 8, 6 if stream == "joint" else 3)


def test_one_stream_training_does_not_read_the_other_streams_shards(tmp_path):
    by_stream = _random_videos(tmp_path, "by_stream")
    before = _batches(by_stream, "rgb")
    for path in by_stream[3:]:  # the flow shards, truncated inside their last record
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 9)
    after = _batches(by_stream, "rgb")
    for (fa, la), (fb, lb) in zip(before, after):
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(la, lb)
    with pytest.raises(StpnError, match="train-flow-00000-of-00003.tfrecord: corrupt or truncated"):
        with corrupt_record_errors(by_stream):
            _batches(by_stream, "flow")


def test_training_on_a_shard_cut_in_its_last_records_header_fails_naming_it(tmp_path):
    """The issue's case through `run_train`: TensorFlow reads the cut shard as one record fewer and a clean
    end; the count dataset.json records stops the training in one line, and no model is saved."""
    from stpn_tf.model.stpn import ModelConfig
    from stpn_tf.training import keras_compat, trainer
    from tests.helpers.tiny_dataset import GRID, write_tiny_dataset

    dataset_dir = str(tmp_path / "data")
    write_tiny_dataset(dataset_dir)
    (shard,) = list_shards(dataset_dir, "train")
    records = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - len(records[-1]) - 16 + 5)  # 5 bytes into the last header
    assert sum(1 for _ in tf.data.TFRecordDataset(shard)) == 11  # TensorFlow alone: no error
    config = trainer.TrainConfig(num_snippets=GRID, batch_size=4, steps=2, steps_per_epoch=2, shuffle_buffer=16)
    workdir = str(tmp_path / "work")
    try:
        with pytest.raises(StpnError, match=f"^{shard}: holds 11 records but {dataset_dir}/dataset.json records 12 "
                                            "\\(a truncated or altered shard\\); rebuild the dataset$"):
            trainer.run_train(dataset_dir=dataset_dir, workdir=workdir, stream="rgb",
                              model=ModelConfig(attention_units=4), train=config, verbose=0)
    finally:
        keras_compat.set_op_determinism(False)
    assert not os.path.exists(os.path.join(workdir, "rgb", "model.keras"))

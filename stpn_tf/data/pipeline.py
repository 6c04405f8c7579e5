"""tf.data pipelines: TFRecords -> sampled snippets for training and evaluation.

Training sees only features and video-level labels; the decoder's other fields (ids, durations) are
dropped before batching, and temporal annotations are never in the TFRecords at all.

Both storages of stpn_tf.data.tfrecord are read: with "by_stream" shards, training one stream reads only
that stream's files (half the bytes of combined records, which is what the uncached pipeline's speed is
bound by), while "joint" training and evaluation get each video's two records joined. For the same
seed, both storages of the same videos give the same batches.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from stpn_tf.data import tfrecord
from stpn_tf.data.grid import GridConfig, sample_grid


def train_indices(num_snippets, grid_size: int, seed):
    """Stratified random perturbation (spec section 2): one random snippet per stratum.

    With `L` real snippets and `T = grid_size`, stratum `i` spans `[floor(i L / T), floor((i + 1) L / T)]`
    (inclusive; the last stratum ends at `L - 1`) and one integer is drawn uniformly from it.

    Args:
        num_snippets: scalar int `L >= 1`.
        grid_size: `T`.
        seed: `[2]` int seed for the stateless random op (makes the draw repeatable).

    Returns:
        `[T]` int32 indices into the real snippets.
    """
    length = tf.cast(num_snippets, tf.float64)
    bounds = tf.floor(tf.range(grid_size + 1, dtype=tf.float64) * length / grid_size)
    low = bounds[:-1]
    high = tf.concat([bounds[1:-1], [length - 1.0]], axis=0)
    u = tf.random.stateless_uniform([grid_size], seed=seed, dtype=tf.float64)
    idx = tf.minimum(low + tf.floor(u * (high - low + 1.0)), high)
    return tf.cast(idx, tf.int32)


def stream_features(batch, stream: str, prefix: str = ""):
    """The features a model of `stream` reads: `batch[prefix + stream]`, or for "joint" RGB and flow
    concatenated along the feature axis. `prefix` is "video/" for parsed records, "" for eval batches."""
    if stream == "joint":
        return tf.concat([batch[prefix + "rgb"], batch[prefix + "flow"]], axis=-1)
    return batch[prefix + stream]


def _records(shards: Sequence[str], *, num_classes: int, feature_dim: int, shuffle_files: bool, seed: int,
             streams: Sequence[str] = tfrecord.STREAMS, select=None):
    """Parsed records of `shards` (either storage), holding `streams`; `select` maps each parsed dict."""
    ds = tfrecord.tfrecord_dataset(list(shards), shuffle_files=shuffle_files, seed=seed, streams=streams)

    def parse(serialized):
        parsed = tfrecord.parse_example(serialized, num_classes=num_classes, feature_dim=feature_dim, streams=streams)
        return parsed if select is None else select(parsed)

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_train_dataset(
    shards: Sequence[str],
    *,
    stream: str,
    num_classes: int,
    feature_dim: int,
    num_snippets: int = 400,
    batch_size: int = 6,
    shuffle_buffer: int = 256,
    seed: int = 0,
    repeat: bool = True,
    skip_batches: int = 0,
    cache: bool = False,
) -> tf.data.Dataset:
    """Training batches `({"features": [B, T, D], "mask": [B, T]}, labels [B, C])` for one stream.

    `stream` is "rgb", "flow", or "joint" for both streams concatenated along features (D doubles).
    `shards` are `tfrecord.list_shards`'s paths in either storage; by_stream shards of other streams
    than the one trained are not read.

    `skip_batches` resumes the exact batch sequence of an interrupted run (elements are skipped before
    the snippet sampling, so skipping is cheap). `cache` keeps the decoded features of the stream in
    memory after the first epoch (about 1.3 MB per THUMOS14 video at D = 1024), so later epochs do not
    re-read the TFRecords; sampling stays random every epoch.

    Every video yields exactly `num_snippets` sampled snippets (short videos repeat snippets), so the
    mask is all ones; it is still provided so the model code is the same for padded inputs.
    """
    # Read (by_stream) or decode (combined records) only the stream being trained.
    streams = tfrecord.STREAMS if stream == "joint" else (stream,)
    ds = _records(shards, num_classes=num_classes, feature_dim=feature_dim, shuffle_files=True, seed=seed,
                  streams=streams,
                  select=lambda r: (stream_features(r, stream, "video/"), r["video/num_snippets"], r["video/labels"]))
    if cache:
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # One independent stateless seed per element: the same seed gives the same sample sequence.
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
    if skip_batches:
        ds = ds.skip(skip_batches * batch_size)

    def sample(item, rng):
        features, length, labels = item
        idx = train_indices(length, num_snippets, tf.cast(rng, tf.int64))
        return (
            {"features": tf.gather(features, idx), "mask": tf.ones([num_snippets], tf.float32)},
            labels,
        )

    ds = ds.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(
    shards: Sequence[str],
    *,
    num_classes: int,
    feature_dim: int,
    grid: GridConfig = GridConfig(),
    batch_size: int = 16,
) -> tf.data.Dataset:
    """Evaluation batches with both streams on the test grid, in file order.

    The grid step is `stpn_tf.data.grid.sample_grid`, the same function the serving graph runs.

    Yields:
        dict with "rgb", "flow" `[B, T, D]` (T = grid.length, or the longest video with all_snippets),
        "mask" `[B, T]`, "length" `[B]` (valid grid positions), "num_snippets" `[B]` (real snippets L),
        "seconds_per_snippet" `[B]`, "duration" `[B]`, "video_id" `[B]` strings and "labels" `[B, C]`.
    """
    ds = _records(shards, num_classes=num_classes, feature_dim=feature_dim, shuffle_files=False, seed=0,
                  select=lambda r: {
                      "rgb": r["video/rgb"], "flow": r["video/flow"], "num_snippets": r["video/num_snippets"],
                      "seconds_per_snippet": r["video/seconds_per_snippet"], "duration": r["video/duration"],
                      "video_id": r["video/id"], "labels": r["video/labels"]})

    def on_grid(batch):
        rgb, mask, length = sample_grid(batch["rgb"], batch["num_snippets"], grid)
        flow, _, _ = sample_grid(batch["flow"], batch["num_snippets"], grid)
        return {**batch, "rgb": rgb, "flow": flow, "mask": mask, "length": length}

    return ds.padded_batch(batch_size).map(on_grid).prefetch(tf.data.AUTOTUNE)

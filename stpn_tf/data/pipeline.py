"""The training input pipeline (the parser): decoded TFRecords -> sampled snippets and labels.

Training sees only features and video-level labels; the decoder's other fields (ids, durations) are
dropped before batching, and temporal annotations are never in the TFRecords at all. Evaluation and
serving read the records through the export's graph instead (stpn_tf.inference).

Both storages of stpn_tf.artifacts.shards are read: with "by_stream" shards, training one stream reads
only that stream's files (half the bytes of combined records, which is what the uncached pipeline's
speed is bound by), while "joint" training gets each video's two records joined. For the same seed,
both storages of the same videos give the same batches.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from stpn_tf.artifacts.shards import STREAMS
from stpn_tf.data.records.decoder import parse_example
from stpn_tf.data.records.reader import tfrecord_dataset


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
    concatenated along the feature axis. `prefix` is "video/" for decoded records."""
    if stream == "joint":
        return tf.concat([batch[prefix + "rgb"], batch[prefix + "flow"]], axis=-1)
    return batch[prefix + stream]


def _records(shards: Sequence[str], *, num_classes: int, feature_dim: int, shuffle_files: bool, seed: int,
             streams: Sequence[str] = STREAMS, select=None):
    """Parsed records of `shards` (either storage), holding `streams`; `select` maps each parsed dict."""
    ds = tfrecord_dataset(list(shards), shuffle_files=shuffle_files, seed=seed, streams=streams)

    def parse(serialized):
        parsed = parse_example(serialized, num_classes=num_classes, feature_dim=feature_dim, streams=streams)
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
    `shards` are `list_shards`'s paths (stpn_tf.artifacts.shards) in either storage; by_stream shards of other streams
    than the one trained are not read.

    `skip_batches` resumes the exact batch sequence of an interrupted run (elements are skipped before
    the snippet sampling, so skipping is cheap). `cache` keeps the decoded features of the stream in
    memory after the first epoch (about 1.3 MB per THUMOS14 video at D = 1024), so later epochs do not
    re-read the TFRecords; sampling stays random every epoch.

    Every video yields exactly `num_snippets` sampled snippets (short videos repeat snippets), so the
    mask is all ones; it is still provided so the model code is the same for padded inputs.
    """
    # Read (by_stream) or decode (combined records) only the stream being trained.
    streams = STREAMS if stream == "joint" else (stream,)
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

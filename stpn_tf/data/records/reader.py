"""Reading the records of a split's shards in either storage, with errors that name the corrupt file.

Combined shards give their records as stored. by_stream shards (stpn_tf.artifacts.shards) give one
stream's records as stored, or each video's rgb and flow records joined into its combined record (after
checking that both are the same video), so every reader of combined records reads either storage.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence

import tensorflow as tf

from stpn_tf.artifacts import shards as shard_files
from stpn_tf.core.errors import StpnError
from stpn_tf.data.records.decoder import check

# Start of the error message when the records of two stream shards are not the same video.
STREAM_MISMATCH = "the rgb and flow shards do not hold the same videos in the same order"

# The default makes the end-of-file marker "" parse to the id "".
_ID_SPEC = {"video/id": tf.io.FixedLenFeature([], tf.string, default_value=b"")}


def _flagged(path: tf.Tensor) -> tf.data.Dataset:
    """(record, True) for every record of `path`, then one ("", False) marking its end."""
    records = tf.data.TFRecordDataset(path).map(lambda r: (r, tf.constant(True)))
    return records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(False))))


def merged_stream_records(rgb_path: tf.Tensor, flow_path: tf.Tensor) -> tf.data.Dataset:
    """The whole-video (combined) records of one by_stream shard pair: rgb record + flow record.

    Fails (tf.errors.InvalidArgumentError starting with STREAM_MISMATCH) when record k of the two files
    is not the same video, or one file has more records than the other.
    """
    def join(rgb, flow):
        (rgb, rgb_ok), (flow, flow_ok) = rgb, flow
        same_length = check(tf.equal(rgb_ok, flow_ok), f"{STREAM_MISMATCH} (one has more records); files:",
                            rgb_path, flow_path)
        with tf.control_dependencies([same_length] if same_length is not None else []):
            rgb_id = tf.io.parse_single_example(rgb, _ID_SPEC)["video/id"]
            flow_id = tf.io.parse_single_example(flow, _ID_SPEC)["video/id"]
        same = check(tf.equal(rgb_id, flow_id), f"{STREAM_MISMATCH}; files and video ids:", rgb_path, flow_path,
                     rgb_id, flow_id)
        with tf.control_dependencies([same] if same is not None else []):
            return tf.strings.join([rgb, flow]), rgb_ok

    def not_end(record, ok):
        return ok

    def record_only(record, ok):
        return record

    pairs = tf.data.Dataset.zip((_flagged(rgb_path), _flagged(flow_path))).map(join)
    return pairs.filter(not_end).map(record_only)


def tfrecord_dataset(paths: Sequence[str], *, shuffle_files: bool = False, seed: int | None = None,
                     cycle_length: int | None = None, streams: Sequence[str] | None = None) -> tf.data.Dataset:
    """Serialized records of `paths`, one `TFRecordDataset` per file (or by_stream shard pair), interleaved.

    Combined shards give their records as stored. by_stream shards (as `list_shards` returns them) give
    the records of the `streams` asked for: one stream's records as stored (the other stream's files
    are not read), or, for both (the default), each video's rgb and flow records joined into its
    combined record, so every reader of combined records reads either storage. Both storages give the
    same videos in the same order for the same `seed`.

    A corrupt or truncated file makes iteration raise `tf.errors.DataLossError`, whose message does not
    name the file; iterate inside `corrupt_record_errors(paths)` (or use `read_records`) to turn it
    into a `StpnError` that does (also for stream shards that do not match).

    Args:
      paths: shard files.
      shuffle_files: shuffle the file order (each epoch when repeated).
      seed: seed of the file shuffle.
      cycle_length: files (shard pairs) read concurrently; default min(number of shards, 4).
      streams: the streams the records must hold (None: both). Only by_stream shards depend on it.

    Returns:
      A dataset of scalar tf.string records.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise StpnError("no TFRecord files to read")
    all_streams = shard_files.STREAMS
    wanted = tuple(all_streams if streams is None else streams)
    if not wanted or set(wanted) - set(all_streams):
        raise ValueError(f"streams must be a non-empty subset of {all_streams}, got {streams!r}")
    if shard_files.storage_of(paths) == shard_files.BY_STREAM:
        grouped = shard_files.stream_files(paths, [s for s in all_streams if s in wanted])
        if len(grouped) == 1:
            paths, read = next(iter(grouped.values())), tf.data.TFRecordDataset
        else:
            paths, read = list(zip(grouped["rgb"], grouped["flow"])), merged_stream_records
    else:
        read = tf.data.TFRecordDataset
    if read is merged_stream_records:
        files = tf.data.Dataset.from_tensor_slices(([p[0] for p in paths], [p[1] for p in paths]))
    else:
        files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_files:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    cycle = cycle_length or min(len(paths), 4)
    return files.interleave(read, cycle_length=cycle, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


def find_corrupt_file(paths: Sequence[str]) -> tuple[str, str] | None:
    """Reads every file on its own; returns (path, TF's message) for the first unreadable one, or None."""
    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
            return path, one_line(e.message)
    return None


def _video_ids(path: str) -> list[bytes]:
    ids = tf.data.TFRecordDataset(path).map(lambda r: tf.io.parse_single_example(r, _ID_SPEC)["video/id"])
    return [i.numpy() for i in ids]


def find_stream_mismatch(paths: Sequence[str]) -> str | None:
    """For by_stream shards: a one-line description of the first shard pair whose videos differ, or None."""
    if shard_files.storage_of(paths) != shard_files.BY_STREAM:
        return None
    stream_of = {str(p): shard_files.STREAM_SHARD_RE.match(os.path.basename(str(p))).group("stream") for p in paths}
    present = {s: [p for p, stream in stream_of.items() if stream == s] for s in shard_files.STREAMS}
    if not all(present.values()):
        return None
    grouped = shard_files.stream_files(paths)
    for rgb_path, flow_path in zip(grouped["rgb"], grouped["flow"]):
        rgb_ids, flow_ids = _video_ids(rgb_path), _video_ids(flow_path)
        for k, (a, b) in enumerate(zip(rgb_ids, flow_ids)):
            if a != b:
                return (f"{flow_path}: record {k} is video {b.decode('utf-8', 'replace')!r} but record {k} of "
                        f"{rgb_path} is {a.decode('utf-8', 'replace')!r} ({STREAM_MISMATCH}); rebuild the dataset")
        if len(rgb_ids) != len(flow_ids):
            return (f"{flow_path}: {len(flow_ids)} records but {rgb_path} has {len(rgb_ids)} ({STREAM_MISMATCH}); "
                    "rebuild the dataset")
    return None


def one_line(message: str) -> str:
    """TF's error message on one line, without its function-node and op decorations."""
    # TF prefixes iterator errors with "{{function_node ...}}" and appends "[Op:...]"; keep the core.
    message = re.sub(r"\{\{function_node [^}]*\}\}", "", message)
    message = re.sub(r"\[Op:[^\]]*\].*$", "", message, flags=re.S)
    return " ".join(message.split())


@contextlib.contextmanager
def corrupt_record_errors(paths: Sequence[str]) -> Iterator[None]:
    """Converts a `DataLossError` raised in the block into a `StpnError` naming the corrupt shard.

    Wrap any loop (or `model.fit`) that consumes a dataset built from `paths`. On the error path the
    files are re-read one by one to find the culprit, since TF's message carries only an offset. Stream
    shards whose records are not the same videos (by_stream storage) are named the same way.
    """
    paths = [str(p) for p in paths]
    try:
        yield
    except tf.errors.DataLossError as e:
        culprit = find_corrupt_file(paths)
        if culprit is None:
            raise StpnError(f"corrupt TFRecord data in one of {len(paths)} file(s): {one_line(e.message)}") from e
        path, message = culprit
        raise StpnError(f"{path}: corrupt or truncated TFRecord file ({message}); rebuild the dataset") from e
    except tf.errors.InvalidArgumentError as e:
        if STREAM_MISMATCH not in e.message:
            raise
        mismatch = find_stream_mismatch(paths)
        raise StpnError(mismatch or one_line(e.message)) from e


def read_records(paths: Sequence[str]) -> Iterator[bytes]:
    """Yields every serialized record of `paths` in file order; a corrupt file raises StpnError naming it.

    by_stream shards yield each video's combined record (rgb + flow records joined), shard by shard.
    """
    paths = [str(p) for p in paths]
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise StpnError(f"{path}: TFRecord file not found")
    if shard_files.storage_of(paths) == shard_files.BY_STREAM:
        grouped = shard_files.stream_files(paths)
        for pair in zip(grouped["rgb"], grouped["flow"]):
            with corrupt_record_errors(list(pair)):
                for record in merged_stream_records(*pair):
                    yield record.numpy()
        return
    for path in paths:
        with corrupt_record_errors([path]):
            for record in tf.data.TFRecordDataset(path):
                yield record.numpy()

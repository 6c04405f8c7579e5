"""Reading the records of a split's shards in either storage, with errors that name the corrupt file.

Combined shards give their records as stored. by_stream shards (stpn_tf.artifacts.shards) give one
stream's records as stored, or each video's rgb and flow records joined into its combined record (after
checking that both are the same video), so every reader of combined records reads either storage.

Every file is read against the number of records it must hold: what `dataset.json` records for it
(SplitInfo.shard_records), asserted in the tf.data graph (`assert_cardinality`, no extra reads), because
TensorFlow reads a file cut inside a record's 12-byte header as a clean end of file. A file no
`dataset.json` counts (a dataset built before the counts were recorded, or loose shards) is counted once
by `scan_records`, a walk over its record headers that fails on a cut record; a dataset.json without
counts also logs one warning line, since a file cut exactly between two records passes that walk.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Iterator, Sequence

import tensorflow as tf
from absl import logging

from stpn_tf.artifacts import dataset_dir as dataset_io
from stpn_tf.artifacts import shards as shard_files
from stpn_tf.core.errors import StpnError
from stpn_tf.data.records.decoder import check

# Start of the error message when the records of two stream shards are not the same video.
STREAM_MISMATCH = "the rgb and flow shards do not hold the same videos in the same order"

# Part of TensorFlow's message when `assert_cardinality` finds fewer or more records than asserted.
_CARDINALITY = "Input dataset was expected to contain"

# The default makes the end-of-file marker "" parse to the id "".
_ID_SPEC = {"video/id": tf.io.FixedLenFeature([], tf.string, default_value=b"")}

# A TFRecord record: uint64 length, masked CRC32C of the length, the data, masked CRC32C of the data.
_HEADER_BYTES = 12
_FOOTER_BYTES = 4


def scan_records(path: str) -> int:
    """The number of records of a TFRecord file, from a walk over its record headers (the data is skipped).

    Reads 8 bytes and seeks once per record: about a microsecond per record on a local disk, one ranged
    read per record on gs://. It checks the framing only (a record whose data is damaged but complete is
    found by the CRC checks of the real read).

    Raises:
      StpnError: naming the file, when it is missing or its last record is cut (in its header or data).
    """
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise StpnError(f"{path}: TFRecord file not found")
    size = tf.io.gfile.stat(path).length
    opened = open(path, "rb") if "://" not in path else tf.io.gfile.GFile(path, "rb")
    count = position = 0
    with opened as handle:
        while position < size:
            left = size - position
            if left < _HEADER_BYTES:
                raise StpnError(f"{path}: corrupt or truncated TFRecord file (it ends {left} byte(s) into the "
                                f"12-byte header of the record after {count} complete record(s)); rebuild the dataset")
            handle.seek(position)
            (length,) = struct.unpack("<Q", handle.read(8))
            end = position + _HEADER_BYTES + length + _FOOTER_BYTES
            if end > size:
                raise StpnError(f"{path}: corrupt or truncated TFRecord file (the record after {count} complete "
                                f"record(s) needs {end - position} bytes, the file ends {left} bytes into it); "
                                "rebuild the dataset")
            position, count = end, count + 1
    return count


def expected_records(paths: Sequence[str], *, warn: bool = True) -> list[int]:
    """How many records each of `paths` must hold: its dataset.json's count, else `scan_records`'s.

    With `warn`, a dataset.json that records no counts (a dataset built before they were) logs one line.
    """
    paths = [str(p) for p in paths]
    recorded, unrecorded = dataset_io.recorded_shard_records(paths)
    if warn:
        for metadata, files in unrecorded.items():
            logging.warning("%s records no per-shard record counts (built before they were recorded): checked "
                            "the framing of its %d shard file(s) instead, which misses a shard cut exactly between "
                            "two records; rebuild the dataset to record them", metadata, len(files))
    return [recorded[p] if p in recorded else scan_records(p) for p in paths]


def counted_records(path: tf.Tensor, num_records: tf.Tensor) -> tf.data.Dataset:
    """The records of one file, failing (tf.errors.FailedPreconditionError) when it holds fewer or more
    than `num_records`; graph-safe (the count is checked as the file is read, at no extra cost)."""
    return tf.data.TFRecordDataset(path).apply(tf.data.experimental.assert_cardinality(num_records))


def _flagged(path: tf.Tensor, num_records: tf.Tensor | None = None) -> tf.data.Dataset:
    """(record, True) for every record of `path`, then one ("", False) marking its end."""
    records = tf.data.TFRecordDataset(path) if num_records is None else counted_records(path, num_records)
    records = records.map(lambda r: (r, tf.constant(True)))
    return records.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(False))))


def merged_stream_records(rgb_path: tf.Tensor, flow_path: tf.Tensor, rgb_records: tf.Tensor | None = None,
                          flow_records: tf.Tensor | None = None) -> tf.data.Dataset:
    """The whole-video (combined) records of one by_stream shard pair: rgb record + flow record.

    Fails (tf.errors.InvalidArgumentError starting with STREAM_MISMATCH) when record k of the two files
    is not the same video, or one file has more records than the other; with `rgb_records` and
    `flow_records`, also (tf.errors.FailedPreconditionError) when a file holds another number of records.
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

    pairs = tf.data.Dataset.zip((_flagged(rgb_path, rgb_records), _flagged(flow_path, flow_records))).map(join)
    return pairs.filter(not_end).map(record_only)


def tfrecord_dataset(paths: Sequence[str], *, shuffle_files: bool = False, seed: int | None = None,
                     cycle_length: int | None = None, streams: Sequence[str] | None = None) -> tf.data.Dataset:
    """Serialized records of `paths`, one `TFRecordDataset` per file (or by_stream shard pair), interleaved.

    Combined shards give their records as stored. by_stream shards (as `list_shards` returns them) give
    the records of the `streams` asked for: one stream's records as stored (the other stream's files
    are not read), or, for both (the default), each video's rgb and flow records joined into its
    combined record, so every reader of combined records reads either storage. Both storages give the
    same videos in the same order for the same `seed`.

    Each file read is checked against the records it must hold (`expected_records`: dataset.json's
    count; a file it does not count is walked once by `scan_records`, which fails at once on a cut
    record). A file with fewer or more records makes iteration raise `tf.errors.FailedPreconditionError`
    when its end is reached, a corrupt one `tf.errors.DataLossError`; neither message names the file:
    iterate inside `corrupt_record_errors(paths)` (or use `read_records`) to turn them into a
    `StpnError` that does (also for stream shards that do not match).

    Args:
      paths: shard files.
      shuffle_files: shuffle the file order (each epoch when repeated).
      seed: seed of the file shuffle.
      cycle_length: files (shard pairs) read concurrently; default min(number of shards, 4).
      streams: the streams the records must hold (None: both). Only by_stream shards depend on it.

    Returns:
      A dataset of scalar tf.string records.

    Raises:
      StpnError: naming the file, when one to read is missing, cut (`scan_records`, for files without a
        recorded count) or not listed by a dataset.json that records counts.
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
        read_paths = [p for files in grouped.values() for p in files]
    else:
        grouped, read_paths = None, paths
    missing = [p for p in read_paths if not tf.io.gfile.exists(p)]
    if missing:
        raise StpnError(f"{missing[0]}: TFRecord file not found")
    # Only the files read are counted: one-stream training never touches the other stream's shards.
    counts = dict(zip(read_paths, expected_records(read_paths)))
    if grouped is not None and len(grouped) == 2:
        rgb, flow = grouped["rgb"], grouped["flow"]
        files = tf.data.Dataset.from_tensor_slices((rgb, flow, tf.constant([counts[p] for p in rgb], tf.int64),
                                                    tf.constant([counts[p] for p in flow], tf.int64)))
        read, paths = merged_stream_records, rgb
    else:
        paths = read_paths
        files = tf.data.Dataset.from_tensor_slices((paths, tf.constant([counts[p] for p in paths], tf.int64)))
        read = counted_records
    if shuffle_files:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    cycle = cycle_length or min(len(paths), 4)
    return files.interleave(read, cycle_length=cycle, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


def find_corrupt_file(paths: Sequence[str]) -> tuple[str, str] | None:
    """Reads every file on its own; returns (path, TF's message) for the first unreadable one, or None."""
    for path in paths:
        _, message = _readable_records(path)
        if message is not None:
            return path, message
    return None


def _readable_records(path: str) -> tuple[int, str | None]:
    """(records read before an error, the error's one-line message or None)."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            count += 1
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
        return count, one_line(e.message)
    return count, None


def _recorded_by(path: str) -> str:
    recorded, _ = dataset_io.recorded_shard_records([path])
    return (f"{dataset_io.metadata_path(os.path.dirname(path))} records" if path in recorded
            else "its framing scan counted")


def find_count_mismatch(paths: Sequence[str]) -> str | None:
    """A one-line description of the first file holding another number of records than it must, or None."""
    paths = [str(p) for p in paths]
    for path, expected in zip(paths, expected_records(paths, warn=False)):
        found, message = _readable_records(path)
        if message is not None:
            return _corrupt_line(path, message, found, expected)
        if found != expected:
            return (f"{path}: holds {found} records but {_recorded_by(path)} {expected} (a truncated or altered "
                    "shard); rebuild the dataset")
    return None


def _corrupt_line(path: str, message: str, found: int, expected: int | None) -> str:
    counted = "" if expected is None else f"; {found} records readable, {_recorded_by(path)} {expected}"
    return f"{path}: corrupt or truncated TFRecord file ({message}){counted}; rebuild the dataset"


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
    files are re-read one by one to find the culprit, since TF's message carries only an offset. A file
    holding fewer or more records than it must (`expected_records`) is named with both counts; stream
    shards whose records are not the same videos (by_stream storage) are named the same way.
    """
    paths = [str(p) for p in paths]
    try:
        yield
    except tf.errors.DataLossError as e:
        for path in paths:
            found, message = _readable_records(path)
            if message is not None:
                try:
                    (expected,) = expected_records([path], warn=False)
                except StpnError:  # the framing scan fails too: the file cannot be counted
                    expected = None
                raise StpnError(_corrupt_line(path, message, found, expected)) from e
        raise StpnError(f"corrupt TFRecord data in one of {len(paths)} file(s): {one_line(e.message)}") from e
    except tf.errors.FailedPreconditionError as e:
        if _CARDINALITY not in e.message:
            raise
        raise StpnError(find_count_mismatch(paths) or f"a TFRecord file holds another number of records than "
                        f"recorded: {one_line(e.message)}") from e
    except tf.errors.InvalidArgumentError as e:
        if STREAM_MISMATCH not in e.message:
            raise
        mismatch = find_stream_mismatch(paths)
        raise StpnError(mismatch or one_line(e.message)) from e


def read_records(paths: Sequence[str]) -> Iterator[bytes]:
    """Yields every serialized record of `paths` in file order; a corrupt file, or one holding fewer or
    more records than it must (`expected_records`), raises StpnError naming it.

    by_stream shards yield each video's combined record (rgb + flow records joined), shard by shard.
    """
    paths = [str(p) for p in paths]
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise StpnError(f"{path}: TFRecord file not found")
    counts = dict(zip(paths, expected_records(paths)))
    if shard_files.storage_of(paths) == shard_files.BY_STREAM:
        grouped = shard_files.stream_files(paths)
        for pair in zip(grouped["rgb"], grouped["flow"]):
            with corrupt_record_errors(list(pair)):
                for record in merged_stream_records(*pair, *(tf.constant(counts[p], tf.int64) for p in pair)):
                    yield record.numpy()
        return
    for path in paths:
        with corrupt_record_errors([path]):
            for record in counted_records(path, tf.constant(counts[path], tf.int64)):
                yield record.numpy()

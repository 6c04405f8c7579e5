"""The TFRecord schema shared by the dataset writer and the training/eval readers.

One `tf.train.Example` per video:

  video/id            bytes
  video/subset        bytes
  video/num_snippets  int64    L
  video/feature_dim   int64    D (per stream)
  video/rgb           bytes    raw little-endian float32, L * D values
  video/flow          bytes    same layout; both streams are always present
  video/labels        int64[]  class indices (video-level, sorted, unique)
  video/duration      float    seconds
  video/fps           float    frame rate the features were extracted at
  video/stride_frames int64    frames per snippet

Shards are written atomically: `ShardedWriter` writes hidden temporary files and renames them to
`<split>-00000-of-00004.tfrecord` only when its block exits without an exception, so a killed writer
leaves only dot-files that `list_shards` never picks up. A dataset directory is complete once its
`dataset.json` exists (stpn_tf.io.dataset_dir); every writer writes that file last.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from stpn_tf.errors import StpnError
from stpn_tf.io import atomic

SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


# --------------------------------------------------------------------------------------------------
# Writing one example.


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float(value: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def make_example(
    *,
    video_id: str,
    subset: str,
    rgb: np.ndarray,
    flow: np.ndarray,
    labels: Sequence[int],
    duration: float,
    fps: float,
    stride_frames: int,
) -> bytes:
    """Serializes one video into a `tf.train.Example`.

    Args:
      video_id: Video name, e.g. "video_test_0000004".
      subset: Split name stored with the video ("train" / "test").
      rgb: [L, D] RGB snippet features (any float dtype; stored as little-endian float32).
      flow: [L, D] optical-flow snippet features, same shape as `rgb`.
      labels: Video-level class indices (duplicates are removed, order is sorted).
      duration: Video length in seconds.
      fps: Frame rate of the frames the features were computed on.
      stride_frames: Frames per snippet (16 for I3D).

    Returns:
      The serialized example.

    Raises:
      StpnError: on shapes that are not [L, D] with L, D >= 1 or that differ between streams.
    """
    rgb = np.asarray(rgb)
    flow = np.asarray(flow)
    if rgb.ndim != 2 or flow.ndim != 2 or rgb.shape != flow.shape:
        raise StpnError(
            f"video {video_id}: rgb {rgb.shape} and flow {flow.shape} must both be [L, D] of one shape")
    num_snippets, feature_dim = rgb.shape
    if num_snippets < 1 or feature_dim < 1:
        raise StpnError(f"video {video_id}: empty features of shape {rgb.shape}")
    if fps <= 0 or stride_frames <= 0:
        raise StpnError(f"video {video_id}: fps ({fps}) and stride_frames ({stride_frames}) must be > 0")
    label_list = sorted({int(c) for c in labels})
    # '<f4' pins the byte order so shards written on any machine decode with little_endian=True.
    features = {
        "video/id": _bytes(video_id.encode("utf-8")),
        "video/subset": _bytes(subset.encode("utf-8")),
        "video/num_snippets": _ints([num_snippets]),
        "video/feature_dim": _ints([feature_dim]),
        "video/rgb": _bytes(np.ascontiguousarray(rgb, dtype="<f4").tobytes()),
        "video/flow": _bytes(np.ascontiguousarray(flow, dtype="<f4").tobytes()),
        "video/labels": _ints(label_list),
        "video/duration": _float(float(duration)),
        "video/fps": _float(float(fps)),
        "video/stride_frames": _ints([int(stride_frames)]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    # Deterministic serialization makes a rebuild from the same inputs byte-identical.
    return example.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------------------------------
# Parsing (graph-safe).

_FEATURE_SPEC = {
    "video/id": tf.io.FixedLenFeature([], tf.string),
    "video/subset": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "video/num_snippets": tf.io.FixedLenFeature([], tf.int64),
    "video/feature_dim": tf.io.FixedLenFeature([], tf.int64),
    "video/rgb": tf.io.FixedLenFeature([], tf.string),
    "video/flow": tf.io.FixedLenFeature([], tf.string),
    "video/labels": tf.io.VarLenFeature(tf.int64),
    "video/duration": tf.io.FixedLenFeature([], tf.float32),
    "video/fps": tf.io.FixedLenFeature([], tf.float32),
    "video/stride_frames": tf.io.FixedLenFeature([], tf.int64),
}


def _check(condition: tf.Tensor, message: str, *data: tf.Tensor):
    """tf.debugging.Assert whose error message starts with `message` followed by the given values."""
    return tf.debugging.Assert(condition, [message, *data], summarize=16)


def _decode_stream(raw: tf.Tensor, name: str, video_id: tf.Tensor, num_snippets: tf.Tensor,
                   feature_dim: int) -> tf.Tensor:
    """Decodes raw float32 bytes into [L, D], failing with a named error on a length mismatch."""
    flat = tf.io.decode_raw(raw, tf.float32, little_endian=True)
    expected = num_snippets * feature_dim
    found = tf.size(flat, out_type=tf.int32)
    check = _check(tf.equal(found, expected),
                   f"{name} holds a number of float32 values different from video/num_snippets * "
                   f"feature_dim (feature_dim={feature_dim}); video id, values found, values expected:",
                   video_id, found, expected)
    # In graph mode (Dataset.map) the assert must be tied to the output so it runs before reshape.
    with tf.control_dependencies([check] if check is not None else []):
        return tf.reshape(flat, [-1, feature_dim])


def parse_example(serialized: tf.Tensor, *, num_classes: int, feature_dim: int,
                  streams: Sequence[str] = ("rgb", "flow")) -> dict[str, tf.Tensor]:
    """Parses one serialized video example; works eagerly and inside `Dataset.map`.

    Args:
      serialized: scalar tf.string, one record written by `make_example`.
      num_classes: C, length of the multi-hot label vector.
      feature_dim: D per stream, static so the outputs have a static last dimension.
      streams: which of "rgb" / "flow" to decode; a one-stream training pipeline skips the other's
        copy (its "video/<stream>" key is then absent).

    Returns:
      A dict with "video/id" tf.string [], "video/subset" tf.string [], "video/num_snippets" int32 [],
      "video/rgb" float32 [L, D], "video/flow" float32 [L, D], "video/labels" float32 [C] (multi-hot),
      "video/duration" float32 [], "video/seconds_per_snippet" float32 [] (stride_frames / fps).

    Raises:
      tf.errors.InvalidArgumentError (when the value is evaluated) if the stored feature dimension
      differs from `feature_dim`, a stream's byte length is not num_snippets * feature_dim * 4, or a
      label index is outside [0, num_classes).
    """
    unknown = set(streams) - {"rgb", "flow"}
    if unknown or not streams:
        raise ValueError(f"streams must be a non-empty subset of ('rgb', 'flow'), got {streams!r}")
    # Leaving the other stream out of the spec skips copying its bytes, not only decoding them.
    spec = {k: v for k, v in _FEATURE_SPEC.items() if k not in ("video/rgb", "video/flow") or k[6:] in streams}
    parsed = tf.io.parse_single_example(serialized, spec)
    video_id = parsed["video/id"]
    num_snippets = tf.cast(parsed["video/num_snippets"], tf.int32)
    stored_dim = tf.cast(parsed["video/feature_dim"], tf.int32)
    label_ids = tf.cast(parsed["video/labels"].values, tf.int32)
    checks = [
        _check(tf.equal(stored_dim, feature_dim),
               f"video/feature_dim stored in the record differs from the feature_dim={feature_dim} "
               "asked for; video id and stored value:", video_id, stored_dim),
        _check(num_snippets > 0, "video/num_snippets must be >= 1; video id:", video_id),
        _check(tf.reduce_all(label_ids < num_classes),
               f"video/labels holds a class index >= num_classes={num_classes}; video id and labels:",
               video_id, label_ids),
        _check(tf.reduce_all(label_ids >= 0),
               "video/labels holds a negative class index; video id and labels:", video_id, label_ids),
    ]
    checks = [c for c in checks if c is not None]  # eager asserts return None after passing
    with tf.control_dependencies(checks):
        decoded = {f"video/{s}": _decode_stream(parsed[f"video/{s}"], f"video/{s}", video_id, num_snippets,
                                                feature_dim) for s in ("rgb", "flow") if s in streams}
        # Sum of one-hot rows; labels are unique by construction, the minimum guards hand-made records.
        multi_hot = tf.minimum(
            tf.reduce_sum(tf.one_hot(label_ids, num_classes, dtype=tf.float32), axis=0), 1.0)
    stride = tf.cast(parsed["video/stride_frames"], tf.float32)
    return {
        "video/id": video_id,
        "video/subset": parsed["video/subset"],
        "video/num_snippets": num_snippets,
        **decoded,
        "video/labels": multi_hot,
        "video/duration": parsed["video/duration"],
        # One snippet covers stride_frames / fps seconds (spec §3 step 8); stpn_tf.timeline does the
        # index -> seconds conversion, this is only the per-video constant it needs.
        "video/seconds_per_snippet": stride / parsed["video/fps"],
    }


# --------------------------------------------------------------------------------------------------
# Sharded, atomic writing.


def shard_name(split: str, index: int, num_shards: int) -> str:
    """File name of shard `index` of `num_shards`, e.g. "train-00001-of-00004.tfrecord"."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


class ShardedWriter:
    """Writes serialized examples round-robin into `num_shards` shards of one split, atomically.

    Usage:
      with ShardedWriter(out_dir, "train", 4) as writer:
        for example in examples:
          writer.write(example)
      writer.shards   # final paths, writer.counts: records per shard

    Records go to hidden temporary files (stpn_tf.io.atomic names) in `out_dir`; on a clean exit from
    the `with` block they are renamed to their final names (replacing older shards of the same name).
    On an exception they are deleted; a killed process leaves only the hidden temporaries, which
    `list_shards` ignores and the next `ShardedWriter` on the same directory removes.
    """

    def __init__(self, out_dir: str, split: str, num_shards: int):
        if num_shards < 1:
            raise StpnError(f"num_shards must be >= 1, got {num_shards}")
        if not split or "/" in split or split.startswith("."):
            raise StpnError(f"invalid split name {split!r}")
        self.out_dir = out_dir
        self.split = split
        self.num_shards = int(num_shards)
        self.counts = [0] * self.num_shards
        self.shards: list[str] = []
        self._writers: list[tf.io.TFRecordWriter] = []
        self._temps: list[str] = []
        self._next = 0

    @property
    def num_written(self) -> int:
        return sum(self.counts)

    def __enter__(self) -> "ShardedWriter":
        tf.io.gfile.makedirs(self.out_dir)
        remove_stale_temporaries(self.out_dir, self.split)
        for i in range(self.num_shards):
            temp = atomic.temporary_name(os.path.join(self.out_dir, shard_name(self.split, i, self.num_shards)))
            self._temps.append(temp)
            self._writers.append(tf.io.TFRecordWriter(temp))
        return self

    def write(self, serialized: bytes) -> None:
        """Appends one serialized example to the next shard (round-robin)."""
        if not self._writers:
            raise RuntimeError("ShardedWriter.write called outside its `with` block")
        try:
            self._writers[self._next].write(serialized)
        except tf.errors.OpError as error:
            raise self._write_failure(error) from None
        self.counts[self._next] += 1
        self._next = (self._next + 1) % self.num_shards

    def _write_failure(self, error: Exception) -> Exception:
        shard = os.path.join(self.out_dir, shard_name(self.split, self._next, self.num_shards))
        failed = atomic.write_error(shard, error, kept="the shards already in the directory are unchanged")
        return failed if failed is not None else error

    def __exit__(self, exc_type, exc, tb) -> None:
        closing_error = None
        for w in self._writers:
            try:
                w.close()  # flushes: the last writes can fail here
            except tf.errors.OpError as error:
                closing_error = closing_error or self._write_failure(error)
        self._writers = []
        if exc_type is None and closing_error is not None:
            self.__exit__(type(closing_error), closing_error, None)
            raise closing_error
        if exc_type is not None:
            for temp in self._temps:
                atomic.remove_quietly(temp)
            return
        for i, temp in enumerate(self._temps):
            final = os.path.join(self.out_dir, shard_name(self.split, i, self.num_shards))
            atomic.replace(temp, final)
            self.shards.append(final)
        # Shards of this split with another shard count belong to an earlier build: drop them so the
        # directory holds one consistent set.
        keep = {os.path.basename(p) for p in self.shards}
        for name in tf.io.gfile.listdir(self.out_dir):
            m = SHARD_RE.match(name)
            if m and m.group("split") == self.split and name not in keep:
                tf.io.gfile.remove(os.path.join(self.out_dir, name))


def remove_stale_temporaries(out_dir: str, split: str | None = None) -> int:
    """Deletes hidden temporary shard files left by killed writers; returns how many were removed."""
    if not tf.io.gfile.isdir(out_dir):
        return 0
    removed = 0
    for name in tf.io.gfile.listdir(out_dir):
        if not atomic.is_temporary(name):
            continue
        m = SHARD_RE.match(name[1:name.index(atomic.TEMP_MARK)])
        if m and (split is None or m.group("split") == split):
            tf.io.gfile.remove(os.path.join(out_dir, name))
            removed += 1
    return removed


def list_shards(dataset_dir: str, split: str) -> list[str]:
    """Returns the sorted shard paths of `split` in `dataset_dir`.

    Raises:
      StpnError: if there are no shards of that split, or the set is incomplete or mixes shard counts
        (e.g. a build that was killed while renaming).
    """
    if not tf.io.gfile.isdir(dataset_dir):
        raise StpnError(f"{dataset_dir}: dataset directory does not exist")
    found: dict[int, list[int]] = {}
    for name in tf.io.gfile.listdir(dataset_dir):
        m = SHARD_RE.match(name)
        if m and m.group("split") == split:
            found.setdefault(int(m.group("count")), []).append(int(m.group("index")))
    if not found:
        raise StpnError(f"{dataset_dir}: no TFRecord shards for split {split!r} "
                        f"(expected files like {shard_name(split, 0, 1)}; run `stpn build-dataset`)")
    if len(found) > 1:
        raise StpnError(f"{dataset_dir}: split {split!r} mixes shard counts {sorted(found)}; rebuild it")
    (count, indices), = found.items()
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise StpnError(f"{dataset_dir}: split {split!r} is incomplete, missing shard(s) "
                        f"{', '.join(shard_name(split, i, count) for i in missing)}")
    return [os.path.join(dataset_dir, shard_name(split, i, count)) for i in range(count)]


# --------------------------------------------------------------------------------------------------
# Reading records, with errors that name the corrupt file.


def tfrecord_dataset(paths: Sequence[str], *, shuffle_files: bool = False, seed: int | None = None,
                     cycle_length: int | None = None) -> tf.data.Dataset:
    """Serialized records of `paths`, one `TFRecordDataset` per file, interleaved.

    A corrupt or truncated file makes iteration raise `tf.errors.DataLossError`, whose message does not
    name the file; iterate inside `corrupt_record_errors(paths)` (or use `read_records`) to turn it
    into a `StpnError` that does.

    Args:
      paths: shard files.
      shuffle_files: shuffle the file order (each epoch when repeated).
      seed: seed of the file shuffle.
      cycle_length: files read concurrently; default min(len(paths), 4).

    Returns:
      A dataset of scalar tf.string records.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise StpnError("no TFRecord files to read")
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_files:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    cycle = cycle_length or min(len(paths), 4)
    return files.interleave(tf.data.TFRecordDataset, cycle_length=cycle, block_length=1,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def find_corrupt_file(paths: Sequence[str]) -> tuple[str, str] | None:
    """Reads every file on its own; returns (path, TF's message) for the first unreadable one, or None."""
    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
            return path, one_line(e.message)
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
    files are re-read one by one to find the culprit, since TF's message carries only an offset.
    """
    try:
        yield
    except tf.errors.DataLossError as e:
        culprit = find_corrupt_file(paths)
        if culprit is None:
            raise StpnError(f"corrupt TFRecord data in one of {len(paths)} file(s): {one_line(e.message)}") from e
        path, message = culprit
        raise StpnError(f"{path}: corrupt or truncated TFRecord file ({message}); rebuild the dataset") from e


def read_records(paths: Sequence[str]) -> Iterator[bytes]:
    """Yields every serialized record of `paths` in file order; a corrupt file raises StpnError naming it."""
    paths = [str(p) for p in paths]
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise StpnError(f"{path}: TFRecord file not found")
        with corrupt_record_errors([path]):
            for record in tf.data.TFRecordDataset(path):
                yield record.numpy()


"""The TFRecord schema shared by the dataset writer and the training/eval readers.

One `tf.train.Example` per video:

  video/id            bytes
  video/subset        bytes
  video/num_snippets  int64    L
  video/feature_dim   int64    D (per stream)
  video/rgb           bytes    raw little-endian float32, L * D values
  video/flow          bytes    same layout
  video/labels        int64[]  class indices (video-level, sorted, unique)
  video/duration      float    seconds
  video/fps           float    frame rate the features were extracted at
  video/stride_frames int64    frames per snippet

Two storages of a split (`STORAGES`), told apart by the shard names:

  "by_stream"  (what `stpn build-dataset` writes)  `<split>-rgb-00000-of-00004.tfrecord` and
               `<split>-flow-00000-of-00004.tfrecord`: shard i of both streams holds the same videos in the
               same order, each record the video's Example without the other stream's features
               (`make_stream_examples`). Training one stream reads only that stream's files, half the bytes.
               The two serialized records concatenated (rgb + flow) are the serialized combined Example
               (protobuf merges concatenated messages), which is how `tfrecord_dataset` and `read_records`
               give whole videos back, after checking that the two records are the same video.
  "combined"   `<split>-00000-of-00004.tfrecord`, one record holding both streams (`make_example`); what
               earlier builds, the Beam pipeline and the synthetic demo data write. Read as before.

Shards are written atomically: `ShardedWriter` writes hidden temporary files and renames them to their
final names only when its block exits without an exception, so a killed writer leaves only dot-files
that `list_shards` never picks up. A dataset directory is complete once its `dataset.json` exists
(stpn_tf.artifacts.dataset_dir); every writer writes that file last.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.core import atomic

STREAMS = ("rgb", "flow")
COMBINED = "combined"
BY_STREAM = "by_stream"
STORAGES = (BY_STREAM, COMBINED)
DEFAULT_STORAGE = BY_STREAM  # for new datasets; readers take both

SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
STREAM_SHARD_RE = re.compile(
    r"^(?P<split>.+)-(?P<stream>rgb|flow)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


# --------------------------------------------------------------------------------------------------
# Writing one example.


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float(value: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def _video_features(*, video_id: str, subset: str, rgb: np.ndarray, flow: np.ndarray, labels: Sequence[int],
                    duration: float, fps: float, stride_frames: int) -> dict[str, tf.train.Feature]:
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
    return {
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


def _serialize(features: Mapping[str, tf.train.Feature]) -> bytes:
    example = tf.train.Example(features=tf.train.Features(feature=features))
    # Deterministic serialization makes a rebuild from the same inputs byte-identical.
    return example.SerializeToString(deterministic=True)


def _without_other_streams(features: Mapping[str, tf.train.Feature], stream: str) -> dict[str, tf.train.Feature]:
    return {k: v for k, v in features.items() if k not in {f"video/{s}" for s in STREAMS if s != stream}}


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
    """Serializes one video into a `tf.train.Example` (the "combined" storage: both streams).

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
    return _serialize(_video_features(video_id=video_id, subset=subset, rgb=rgb, flow=flow, labels=labels,
                                      duration=duration, fps=fps, stride_frames=stride_frames))


def make_stream_examples(**video) -> dict[str, bytes]:
    """One video as one serialized record per stream (the "by_stream" storage).

    Takes `make_example`'s keyword arguments. Record "rgb" holds every field but "video/flow", record
    "flow" every field but "video/rgb"; `records["rgb"] + records["flow"]` is a serialized Example that
    parses (and re-serializes) exactly as `make_example(**video)`.
    """
    features = _video_features(**video)
    return {stream: _serialize(_without_other_streams(features, stream)) for stream in STREAMS}


def split_example(serialized: bytes) -> dict[str, bytes]:
    """A combined serialized Example as `make_stream_examples` would have written it."""
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as error:  # protobuf's DecodeError
        raise StpnError(f"not a serialized tf.train.Example ({error})") from None
    features = dict(example.features.feature)
    missing = [f"video/{s}" for s in STREAMS if f"video/{s}" not in features]
    if missing:
        raise StpnError(f"the example lacks {', '.join(missing)}; cannot store it by stream")
    return {stream: _serialize(_without_other_streams(features, stream)) for stream in STREAMS}


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
    """File name of shard `index` of `num_shards`, e.g. "train-00001-of-00004.tfrecord" (combined storage)."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def stream_shard_name(split: str, stream: str, index: int, num_shards: int) -> str:
    """File name of one stream's shard (by_stream storage), e.g. "train-rgb-00001-of-00004.tfrecord"."""
    return f"{split}-{stream}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_names(split: str, num_shards: int, storage: str = DEFAULT_STORAGE) -> list[str]:
    """Every file name of a split in `storage`, in `list_shards` order (by_stream: rgb shards, then flow)."""
    check_storage(storage)
    if storage == COMBINED:
        return [shard_name(split, i, num_shards) for i in range(num_shards)]
    return [stream_shard_name(split, s, i, num_shards) for s in STREAMS for i in range(num_shards)]


def check_storage(storage: str) -> str:
    if storage not in STORAGES:
        raise StpnError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return storage


def shard_split(name: str) -> str | None:
    """The split a shard file name belongs to (either storage), or None for other files."""
    m = STREAM_SHARD_RE.match(name) or SHARD_RE.match(name)
    return m.group("split") if m else None


def check_split(split: str) -> str:
    """A split name shards can carry: not empty, no path, no leading dot, not ending like a stream's shards."""
    if not split or "/" in split or split.startswith(".") or STREAM_SHARD_RE.match(shard_name(split, 0, 1)):
        raise StpnError(f"invalid split name {split!r}" + (
            " (it ends like a stream's shards: -rgb / -flow)" if split.endswith(("-rgb", "-flow")) else ""))
    return split


def remove_other_shards(out_dir: str, split: str, keep) -> None:
    """Drops the shards of `split` (either storage) not named in `keep`: an earlier build's, with another
    shard count or storage, so that the directory holds one consistent set."""
    for name in tf.io.gfile.listdir(out_dir):
        if shard_split(name) == split and name not in keep:
            tf.io.gfile.remove(os.path.join(out_dir, name))


class ShardedWriter:
    """Writes serialized examples round-robin into `num_shards` shards of one split, atomically.

    Usage:
      with ShardedWriter(out_dir, "train", 4) as writer:
        for example in examples:
          writer.write(example)
      writer.shards   # final paths, writer.counts: records (videos) per shard

    `storage` is "combined" (one file per shard, `write(make_example(...))`) or "by_stream" (one file per
    shard and stream; `write(make_stream_examples(...))`, or a combined example, which is split).

    Records go to hidden temporary files (stpn_tf.core.atomic names) in `out_dir`; on a clean exit from
    the `with` block they are renamed to their final names (replacing older shards of the same name) and
    the split's shards of any other count or storage are removed. On an exception they are deleted; a
    killed process leaves only the hidden temporaries, which `list_shards` ignores and the next
    `ShardedWriter` on the same directory removes.
    """

    def __init__(self, out_dir: str, split: str, num_shards: int, *, storage: str = COMBINED):
        if num_shards < 1:
            raise StpnError(f"num_shards must be >= 1, got {num_shards}")
        self.out_dir = out_dir
        self.split = check_split(split)
        self.num_shards = int(num_shards)
        self.storage = check_storage(storage)
        self.counts = [0] * self.num_shards
        self.shards: list[str] = []
        self._names = shard_names(split, self.num_shards, self.storage)
        self._writers: list[tf.io.TFRecordWriter] = []
        self._temps: list[str] = []
        self._next = 0

    @property
    def num_written(self) -> int:
        return sum(self.counts)

    def __enter__(self) -> "ShardedWriter":
        tf.io.gfile.makedirs(self.out_dir)
        remove_stale_temporaries(self.out_dir, self.split)
        for name in self._names:
            temp = atomic.temporary_name(os.path.join(self.out_dir, name))
            self._temps.append(temp)
            self._writers.append(tf.io.TFRecordWriter(temp))
        return self

    def write(self, serialized: bytes | Mapping[str, bytes]) -> None:
        """Appends one video to the next shard (round-robin).

        Args:
          serialized: combined storage: a serialized example (`make_example`). by_stream storage: the
            records of `make_stream_examples`, or a combined example (split with `split_example`).
        """
        if not self._writers:
            raise RuntimeError("ShardedWriter.write called outside its `with` block")
        if self.storage == COMBINED:
            if not isinstance(serialized, bytes):
                raise TypeError("a combined-storage ShardedWriter takes one serialized example (bytes)")
            records = [(self._next, serialized)]
        else:
            by_stream = split_example(serialized) if isinstance(serialized, bytes) else serialized
            if set(by_stream) != set(STREAMS):
                raise TypeError(f"a by_stream ShardedWriter takes one record per stream {STREAMS}, "
                                f"got {sorted(by_stream)}")
            records = [(k * self.num_shards + self._next, by_stream[s]) for k, s in enumerate(STREAMS)]
        for index, record in records:
            try:
                self._writers[index].write(record)
            except tf.errors.OpError as error:
                raise self._write_failure(error, index) from None
        self.counts[self._next] += 1
        self._next = (self._next + 1) % self.num_shards

    def _write_failure(self, error: Exception, index: int) -> Exception:
        shard = os.path.join(self.out_dir, self._names[index])
        failed = atomic.write_error(shard, error, kept="the shards already in the directory are unchanged")
        return failed if failed is not None else error

    def __exit__(self, exc_type, exc, tb) -> None:
        closing_error = None
        for index, w in enumerate(self._writers):
            try:
                w.close()  # flushes: the last writes can fail here
            except tf.errors.OpError as error:
                closing_error = closing_error or self._write_failure(error, index)
        self._writers = []
        if exc_type is None and closing_error is not None:
            self.__exit__(type(closing_error), closing_error, None)
            raise closing_error
        if exc_type is not None:
            for temp in self._temps:
                atomic.remove_quietly(temp)
            return
        for name, temp in zip(self._names, self._temps):
            final = os.path.join(self.out_dir, name)
            atomic.replace(temp, final)
            self.shards.append(final)
        remove_other_shards(self.out_dir, self.split, set(self._names))


def remove_stale_temporaries(out_dir: str, split: str | None = None) -> int:
    """Deletes hidden temporary shard files left by killed writers; returns how many were removed."""
    if not tf.io.gfile.isdir(out_dir):
        return 0
    removed = 0
    for name in tf.io.gfile.listdir(out_dir):
        if not atomic.is_temporary(name):
            continue
        found = shard_split(name[1:name.index(atomic.TEMP_MARK)])
        if found is not None and (split is None or found == split):
            tf.io.gfile.remove(os.path.join(out_dir, name))
            removed += 1
    return removed


def _complete_set(dataset_dir: str, split: str, found: dict[int, list[int]], name, what: str) -> list[str]:
    """The paths of one complete shard set (`found`: shard count -> indices present), or StpnError."""
    if len(found) > 1:
        raise StpnError(f"{dataset_dir}: {what} of split {split!r} mix shard counts {sorted(found)}; rebuild it")
    (count, indices), = found.items()
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise StpnError(f"{dataset_dir}: split {split!r} is incomplete, missing shard(s) "
                        f"{', '.join(name(i, count) for i in missing)}")
    return [os.path.join(dataset_dir, name(i, count)) for i in range(count)]


def list_shards(dataset_dir: str, split: str) -> list[str]:
    """Returns the shard paths of `split` in `dataset_dir`, in either storage.

    Combined storage: the shards in index order. by_stream storage: the rgb shards in index order, then
    the flow shards (pass the whole list to `tfrecord_dataset`, `read_records` or the pipelines, which
    read only the streams they need).

    Raises:
      StpnError: if there are no shards of that split, the set is incomplete or mixes shard counts (e.g.
        a build that was killed while renaming), one stream's shards are missing, or both storages are
        present.
    """
    if not tf.io.gfile.isdir(dataset_dir):
        raise StpnError(f"{dataset_dir}: dataset directory does not exist")
    combined: dict[int, list[int]] = {}
    streams: dict[str, dict[int, list[int]]] = {}
    for name in tf.io.gfile.listdir(dataset_dir):
        m = STREAM_SHARD_RE.match(name)
        if m:
            if m.group("split") == split:
                streams.setdefault(m.group("stream"), {}).setdefault(int(m.group("count")), []).append(
                    int(m.group("index")))
            continue
        m = SHARD_RE.match(name)
        if m and m.group("split") == split:
            combined.setdefault(int(m.group("count")), []).append(int(m.group("index")))
    if not combined and not streams:
        raise StpnError(f"{dataset_dir}: no TFRecord shards for split {split!r} "
                        f"(expected files like {stream_shard_name(split, 'rgb', 0, 1)} or "
                        f"{shard_name(split, 0, 1)}; run `stpn build-dataset`)")
    if combined and streams:
        raise StpnError(f"{dataset_dir}: split {split!r} has both combined shards ({split}-NNNNN-of-NNNNN.tfrecord) "
                        f"and by-stream shards ({split}-rgb-* / {split}-flow-*); rebuild it")
    if combined:
        return _complete_set(dataset_dir, split, combined, lambda i, n: shard_name(split, i, n), "shards")
    paths = []
    for stream in STREAMS:
        if stream not in streams:
            (other, counts), = ((s, c) for s, c in streams.items())
            count = max(counts)
            raise StpnError(f"{dataset_dir}: split {split!r} has {other} shards but no {stream} shards "
                            f"(missing {stream_shard_name(split, stream, 0, count)} ... "
                            f"{stream_shard_name(split, stream, count - 1, count)}); rebuild it")
        paths.append(_complete_set(dataset_dir, split, streams[stream],
                                   lambda i, n, s=stream: stream_shard_name(split, s, i, n), f"the {stream} shards"))
    if len(paths[0]) != len(paths[1]):
        raise StpnError(f"{dataset_dir}: split {split!r} has {len(paths[0])} rgb shards but {len(paths[1])} flow "
                        "shards; rebuild it")
    return paths[0] + paths[1]


def storage_of(paths: Sequence[str]) -> str:
    """COMBINED or BY_STREAM, from the file names; StpnError when a list mixes both."""
    kinds = {BY_STREAM if STREAM_SHARD_RE.match(os.path.basename(str(p))) else COMBINED for p in paths}
    if len(kinds) > 1:
        raise StpnError(f"the TFRecord files mix by-stream shards (<split>-rgb-* / <split>-flow-*) and combined "
                        f"shards: {', '.join(str(p) for p in paths)}")
    return kinds.pop() if kinds else COMBINED


def stream_files(paths: Sequence[str], streams: Sequence[str] = STREAMS) -> dict[str, list[str]]:
    """by_stream shard paths grouped by stream and aligned: entry i of every list is the same shard index.

    The order is that of the first stream's files in `paths`. Raises StpnError naming the shard of a
    stream that has no counterpart among `paths` in another stream asked for.
    """
    by_key: dict[str, dict[tuple[str, str, int, int], str]] = {s: {} for s in STREAMS}
    order: dict[str, list[tuple[str, str, int, int]]] = {s: [] for s in STREAMS}
    for path in paths:
        path = str(path)
        m = STREAM_SHARD_RE.match(os.path.basename(path))
        if m is None:
            raise StpnError(f"{path}: not a by-stream shard (<split>-rgb-NNNNN-of-NNNNN.tfrecord)")
        key = (os.path.dirname(path), m.group("split"), int(m.group("index")), int(m.group("count")))
        by_key[m.group("stream")][key] = path
        order[m.group("stream")].append(key)
    first = streams[0]
    out: dict[str, list[str]] = {s: [] for s in streams}
    for key in order[first]:
        for stream in streams:
            if key not in by_key[stream]:
                directory, split, index, count = key
                raise StpnError(f"{by_key[first][key]}: its {stream} counterpart "
                                f"{os.path.join(directory, stream_shard_name(split, stream, index, count))} "
                                "is not among the files to read")
            out[stream].append(by_key[stream][key])
    for stream in streams[1:]:
        extra = sorted(set(by_key[stream]) - set(order[first]))
        if extra:
            raise StpnError(f"{by_key[stream][extra[0]]}: its {first} counterpart is not among the files to read")
    return out


# --------------------------------------------------------------------------------------------------
# Reading records, with errors that name the corrupt file.

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
        check = _check(tf.equal(rgb_ok, flow_ok), f"{STREAM_MISMATCH} (one has more records); files:",
                       rgb_path, flow_path)
        with tf.control_dependencies([check] if check is not None else []):
            rgb_id = tf.io.parse_single_example(rgb, _ID_SPEC)["video/id"]
            flow_id = tf.io.parse_single_example(flow, _ID_SPEC)["video/id"]
        same = _check(tf.equal(rgb_id, flow_id), f"{STREAM_MISMATCH}; files and video ids:", rgb_path, flow_path,
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
    wanted = tuple(STREAMS if streams is None else streams)
    if not wanted or set(wanted) - set(STREAMS):
        raise ValueError(f"streams must be a non-empty subset of {STREAMS}, got {streams!r}")
    if storage_of(paths) == BY_STREAM:
        grouped = stream_files(paths, [s for s in STREAMS if s in wanted])
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
    if storage_of(paths) != BY_STREAM:
        return None
    present = {s: [p for p in paths if STREAM_SHARD_RE.match(os.path.basename(str(p))).group("stream") == s]
               for s in STREAMS}
    if not all(present.values()):
        return None
    grouped = stream_files(paths)
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
    if storage_of(paths) == BY_STREAM:
        grouped = stream_files(paths)
        for pair in zip(grouped["rgb"], grouped["flow"]):
            with corrupt_record_errors(list(pair)):
                for record in merged_stream_records(*pair):
                    yield record.numpy()
        return
    for path in paths:
        with corrupt_record_errors([path]):
            for record in tf.data.TFRecordDataset(path):
                yield record.numpy()

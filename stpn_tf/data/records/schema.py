"""The TFRecord schema shared by the dataset writers and the training/eval readers.

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

In the "by_stream" storage (stpn_tf.artifacts.shards) a video is one record per stream, each the Example
without the other stream's features (`make_stream_examples`). The two serialized records concatenated
(rgb + flow) are the serialized combined Example (protobuf merges concatenated messages), which is how
the readers (stpn_tf.data.records.reader) give whole videos back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from stpn_tf.artifacts.shards import STREAMS
from stpn_tf.core.errors import StpnError

# What `stpn_tf.data.records.decoder.parse_example` reads; "video/subset" is optional in older records.
FEATURE_SPEC = {
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

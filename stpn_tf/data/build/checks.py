"""Build-dataset checks: counted warnings, per-video feature checks, segment clipping, progress output."""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np
from absl import logging

from stpn_tf.artifacts import annotations as ann
from stpn_tf.artifacts.feature_dir import VideoFeatures
from stpn_tf.core.errors import StpnError

# Warning kinds and the words the end summary uses for them.
WARNING_TEXT = {
    "no_features": "annotated videos without features (skipped)",
    "length_trimmed": "videos whose RGB and flow lengths differed by a few snippets (trimmed)",
    "segment_clipped": "segments clipped to the video duration",
    "segment_dropped": "segments dropped (entirely after the video end)",
    "segment_outside": "segments outside the video duration (kept as annotated)",
    "unknown_exclude": "--exclude_videos entries that match no annotated video",
    "not_in_split_files": "annotated videos that no split_<subset>.txt file lists (left out)",
}
_LOGGED_PER_KIND = 10


class BuildWarnings:
    """Counts warnings by kind, logs the first few of each, and fails at once under --strict."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.counts: Counter[str] = Counter()

    def warn(self, kind: str, message: str) -> None:
        if self.strict:
            raise StpnError(f"{message} (--strict turns this warning into an error)")
        self.counts[kind] += 1
        if self.counts[kind] <= _LOGGED_PER_KIND:
            logging.warning("%s", message)
        elif self.counts[kind] == _LOGGED_PER_KIND + 1:
            logging.warning("further warnings of this kind (%s) are only counted", kind)


def check_features(video: VideoFeatures, video_id: str, feature_dim: int | None,
                   max_length_gap: int, warnings: BuildWarnings) -> tuple[np.ndarray, np.ndarray]:
    """Shape, dimension, length and finiteness checks; returns float32 ([L, D], [L, D])."""
    rgb, flow = video.rgb, video.flow
    for name, arr in (("rgb", rgb), ("flow", flow)):
        if arr.ndim != 2:
            raise StpnError(f"{video.where}: {name} features must be [T, D], got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise StpnError(f"{video.where}: zero-length {name} features for video {video_id}")
    if rgb.shape[1] != flow.shape[1]:
        raise StpnError(f"{video.where}: rgb has {rgb.shape[1]} dims but flow has {flow.shape[1]}")
    if feature_dim is not None and rgb.shape[1] != feature_dim:
        raise StpnError(f"{video.where}: wrong feature dimension {rgb.shape[1]} for video {video_id}, "
                        f"expected {feature_dim} per stream")
    gap = abs(rgb.shape[0] - flow.shape[0])
    if gap > max_length_gap:
        raise StpnError(f"{video.where}: rgb has {rgb.shape[0]} snippets but flow has {flow.shape[0]} "
                        f"(gap {gap} > {max_length_gap}) for video {video_id}")
    if gap:
        length = min(rgb.shape[0], flow.shape[0])
        warnings.warn("length_trimmed", f"{video.where}: rgb has {rgb.shape[0]} snippets and flow "
                                        f"{flow.shape[0]}; trimmed both to {length}")
        rgb, flow = rgb[:length], flow[:length]
    rgb = np.asarray(rgb, dtype=np.float32)
    flow = np.asarray(flow, dtype=np.float32)
    for name, arr in (("rgb", rgb), ("flow", flow)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise StpnError(f"{video.where}: {name} features of video {video_id} hold {bad} NaN or "
                            f"infinite value(s); fix the file or skip it with --exclude_videos={video_id}")
    return rgb, flow


def clip_segments(record: ann.VideoRecord, duration: float, warnings: BuildWarnings,
                  where: str, keep: bool = False) -> tuple[ann.Segment, ...]:
    out = []
    for seg in record.segments:
        if keep:
            if seg.end > duration or seg.start < 0:
                warnings.warn("segment_outside", f"{where}: video {record.video_id}: {seg.label} segment "
                                                 f"[{seg.start}, {seg.end}] lies outside [0, {duration:.3f}]"
                                                 " s; kept as annotated")
            out.append(seg)
            continue
        if seg.start >= duration:
            warnings.warn("segment_dropped", f"{where}: video {record.video_id}: {seg.label} segment "
                                             f"[{seg.start}, {seg.end}] starts after the video end "
                                             f"{duration:.3f} s; dropped")
            continue
        if seg.end > duration or seg.start < 0:
            clipped = ann.Segment(max(seg.start, 0.0), min(seg.end, duration), seg.label)
            warnings.warn("segment_clipped", f"{where}: video {record.video_id}: {seg.label} segment "
                                             f"[{seg.start}, {seg.end}] lies outside [0, {duration:.3f}] "
                                             f"s; clipped to [{clipped.start}, {clipped.end}]")
            seg = clipped
        out.append(seg)
    return tuple(out)


class Progress:
    """A Keras progress bar on a terminal, an absl log line every `every` videos otherwise."""

    def __init__(self, total: int, enabled: bool, every: int):
        self.total, self.every, self.done = total, max(1, every), 0
        self.start = time.monotonic()
        self.bar = None
        if enabled and sys.stderr.isatty():
            import keras

            self.bar = keras.utils.Progbar(total, unit_name="video")
        self.enabled = enabled

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.done)
        elif self.enabled and (self.done % self.every == 0 or self.done == self.total):
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            logging.info("build-dataset: %d/%d videos (%.1f videos/s)", self.done, self.total, rate)

"""`stpn build-dataset`: public feature releases + annotations -> TFRecord shards, dataset.json, ground truth.

The build streams: annotations (small) are read and checked up front, then features are read, checked
and written one video at a time. Output is atomic: shards are written under hidden temporary names,
the old `dataset.json` is removed just before the new shards are renamed into place, and the new
`dataset.json` is written last, so a killed build never leaves a directory that looks complete. The same
inputs give byte-identical outputs, so re-running is idempotent.

Layouts (family, feature reader):
  thumos14_reduced  THUMOS14, Thumos14reduced joint object array (`--features` = the .npy file,
                    `--annotations` = the folder with videoname.npy, ... ; needs `--allow_pickle`)
  thumos14_npy      THUMOS14, per-video npy folders `<features>/<split>/{rgb,flow}/<video>.npy`
  thumos14_h5       THUMOS14, one HDF5 file keyed by video id
  activitynet_h5    ActivityNet 1.3, HDF5 file keyed by video id (or "v_<id>")
  activitynet_npy   ActivityNet 1.3, per-video npy folders
Annotations are recognised by what `--annotations` points at: a `.json` file (ActivityNet layout, also
BaS-Net's gt.json), a folder with `videoname.npy` (Thumos14reduced arrays), or a folder with
`<Class>_val.txt` / `<Class>_test.txt` (THUMOS14 toolkit ground truth).

Splits: THUMOS14 validation -> "train" (200 videos), test -> "test" (212 videos; 210 with
`thumos14_210=True`, which excludes video_test_0000270 and video_test_0001496). ActivityNet training ->
"train", validation -> "test"; `testing` has no annotations and is not built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from stpn_tf.data import annotations as ann
from stpn_tf.data import features as feat
from stpn_tf.data import tfrecord
from stpn_tf.errors import StpnError

LAYOUTS: dict[str, tuple[str, str]] = {
    "thumos14_reduced": ("thumos14", "joint_npy"),
    "thumos14_npy": ("thumos14", "npy"),
    "thumos14_h5": ("thumos14", "h5"),
    "activitynet_h5": ("activitynet", "h5"),
    "activitynet_npy": ("activitynet", "npy"),
}

# Source subset name -> dataset split; None = not built (no annotations).
SPLITS: dict[str, dict[str, str | None]] = {
    "thumos14": {"validation": "train", "train": "train", "test": "test"},
    "activitynet": {"training": "train", "validation": "test", "testing": None},
}

# Video 270 has annotations far beyond its duration and 1496 is usually dropped with it (spec §5).
THUMOS14_EXCLUDED_FOR_210 = ("video_test_0000270", "video_test_0001496")
THUMOS14_JOINT_FEATURES = "Thumos14reduced-I3D-JOINTFeatures.npy"

# Warning kinds and the words the end summary uses for them.
_WARNING_TEXT = {
    "no_features": "annotated videos without features (skipped)",
    "length_trimmed": "videos whose RGB and flow lengths differed by a few snippets (trimmed)",
    "segment_clipped": "segments clipped to the video duration",
    "segment_dropped": "segments dropped (entirely after the video end)",
    "segment_outside": "segments outside the video duration (kept as annotated)",
    "unknown_exclude": "--exclude_videos entries that match no annotated video",
}
_LOGGED_PER_KIND = 10


class _Warnings:
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


# --------------------------------------------------------------------------------------------------
# Annotations.


def _check_json_duplicate_ids(path: str) -> None:
    """json.load keeps the last of duplicate keys silently; a duplicate video id must be an error."""
    duplicates: list[str] = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        seen: set[str] = set()
        for k in keys:
            if k in seen:
                duplicates.append(k)
            seen.add(k)
        return dict(pairs)

    try:
        with open(path, encoding="utf-8") as f:
            json.load(f, object_pairs_hook=hook)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return  # the annotation reader reports these with its own message
    if duplicates:
        raise StpnError(f"{path}: duplicate key {duplicates[0]!r} (a video id listed twice?)")


def _video_names(folder: str) -> list[str]:
    path = os.path.join(folder, "videoname.npy")
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StpnError(f"{path}: file not found") from None
    except ValueError as e:
        raise StpnError(f"{path}: cannot load as a plain numpy array ({e})") from None
    names = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1).tolist()]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise StpnError(f"{path}: duplicate video id {name!r} (entries {seen[name]} and {i})")
        seen[name] = i
    return names


def _annotation_kind(path: str) -> str:
    if os.path.isfile(path):
        return "json"
    if not os.path.isdir(path):
        raise StpnError(f"{path}: annotations not found")
    names = os.listdir(path)
    if "videoname.npy" in names:
        return "reduced"
    if any(n.endswith(("_val.txt", "_test.txt")) for n in names):
        return "toolkit"
    raise StpnError(f"{path}: not a recognised annotation folder (expected videoname.npy of the "
                    "Thumos14reduced arrays or THUMOS14 toolkit <Class>_val.txt / <Class>_test.txt files)")


def _read_annotations(path: str, kind: str, allow_pickle: bool,
                      durations: Mapping[str, float] | None) -> tuple[list[ann.VideoRecord], list[str]]:
    """Returns (records, files read)."""
    if kind == "json":
        _check_json_duplicate_ids(path)
        return ann.read_activitynet_json(path), [path]
    if kind == "reduced":
        _video_names(path)  # duplicate ids
        records = ann.read_thumos14_reduced(path, allow_pickle=allow_pickle)
        files = [os.path.join(path, n) for n in ("videoname.npy", "subset.npy", "duration.npy",
                                                 "segments.npy", "labels.npy", "Ambiguous_test.txt",
                                                 "Ambiguous_val.txt")]
        return records, [f for f in files if os.path.isfile(f)]
    records = []
    for subset in ("validation", "test"):
        suffix = "_val.txt" if subset == "validation" else "_test.txt"
        if any(n.endswith(suffix) and not n.startswith(ann.AMBIGUOUS) for n in os.listdir(path)):
            records += ann.read_thumos14_toolkit(path, subset, durations)
    files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".txt"))
    return records, files


def _taxonomy_leaves(path: str) -> list[str]:
    """Sorted leaf names of an ActivityNet "taxonomy" (the 200 classes of v1.3); [] when absent."""
    with open(path, encoding="utf-8") as f:
        taxonomy = json.load(f).get("taxonomy") or []
    if not isinstance(taxonomy, list) or not all(isinstance(n, dict) and "nodeName" in n for n in taxonomy):
        raise StpnError(f"{path}: 'taxonomy' must be a list of nodes with 'nodeName'")
    parents = {n.get("parentName") for n in taxonomy}
    return sorted({n["nodeName"] for n in taxonomy if n["nodeName"] not in parents})


def _read_classes(path: str) -> list[str]:
    """Class names from a text file (one per line) or a JSON list."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise StpnError(f"{path}: cannot read class list ({e.strerror})") from None
    if path.endswith(".json"):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise StpnError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise StpnError(f"{path}: expected a JSON list of class names")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise StpnError(f"{path}: empty class list")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise StpnError(f"{path}: class {dup!r} listed twice")
    return names


# --------------------------------------------------------------------------------------------------
# Hashes of the sources (recorded in dataset.json so a dataset can be traced to its inputs).


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str) -> dict[str, Any]:
    """Path, size and sha256 of a source file, as recorded in dataset.json."""
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": _sha256(path)}


def _folder_entry(root: str, files: Sequence[str]) -> dict[str, Any]:
    """One entry for many per-video files: the hash covers each file's relative path and sha256."""
    digest = hashlib.sha256()
    total = 0
    for path in sorted(files):
        digest.update(f"{os.path.relpath(path, root)} {_sha256(path)}\n".encode())
        total += os.path.getsize(path)
    return {"path": os.path.abspath(root), "bytes": total, "sha256": digest.hexdigest(),
            "files": len(files)}


# --------------------------------------------------------------------------------------------------
# Per-video checks.


def _check_features(video: feat.VideoFeatures, video_id: str, feature_dim: int | None,
                    max_length_gap: int, warnings: _Warnings) -> tuple[np.ndarray, np.ndarray]:
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


def _clip_segments(record: ann.VideoRecord, duration: float, warnings: _Warnings,
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


class _Progress:
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


def _default_num_shards(num_videos: int) -> int:
    # Enough shards for file-level shuffling and parallel reads, about 200 videos per shard at scale.
    return max(1, min(num_videos, max(4, math.ceil(num_videos / 200))))


# --------------------------------------------------------------------------------------------------
# The command.


def run_build_dataset(
    *,
    layout: str,
    annotations: str,
    features: str,
    out: str,
    dataset_name: str | None = None,
    allow_pickle: bool = False,
    strict: bool = False,
    num_shards: int | Mapping[str, int] | None = None,
    exclude_videos: Sequence[str] = (),
    thumos14_210: bool = False,
    feature_dim: int | None = None,
    durations: str | None = None,
    classes: str | None = None,
    fps: float | None = None,
    stride_frames: int | None = None,
    snippet_time: str = "fixed",
    max_length_gap: int = 1,
    segments_outside: str = "clip",
    keep_unlabeled: bool = False,
    progress: bool = True,
    progress_every: int = 100,
    feature_source: feat.FeatureSource | None = None,
) -> int:
    """Builds a dataset directory (TFRecord shards per split, dataset.json, ground_truth.json).

    Args:
      layout: one of LAYOUTS ("thumos14_reduced", "thumos14_npy", "thumos14_h5", "activitynet_h5",
        "activitynet_npy").
      annotations: ActivityNet-layout JSON file, Thumos14reduced array folder or THUMOS14 toolkit folder.
      features: the joint .npy file, the per-video npy root folder, or the HDF5 file.
      out: dataset directory to create or rebuild.
      dataset_name: name stored in dataset.json (default: the layout's family).
      allow_pickle: allow loading object arrays (Thumos14reduced); pickle can run code.
      strict: turn every warning (missing features, trimmed lengths, clipped segments) into an error.
      num_shards: shards per split, as one int or {split: int}; default about one per 200 videos, >= 4.
      exclude_videos: video ids left out of the build.
      thumos14_210: also exclude video_test_0000270 and video_test_0001496 (the 210-video test set).
      feature_dim: expected D per stream; default: taken from the first video, then enforced.
      durations: folder with videoname.npy + duration.npy (Thumos14reduced) for annotations without
        durations (toolkit txt, BaS-Net gt.json).
      classes: class list file (one name per line, or a JSON list); default THUMOS14's 20 classes, or
        for ActivityNet the sorted leaf names of the JSON "taxonomy" (else all labels in the file).
      fps, stride_frames: snippet timing when the features carry none (default 25 fps, 16 frames).
      snippet_time: "fixed" (a snippet covers stride_frames / fps seconds) or "duration" (features
        resampled to a fixed length: a video's L snippets span its annotated duration).
      max_length_gap: RGB/flow length differences up to this many snippets are trimmed with a warning;
        larger ones are errors.
      segments_outside: "clip" (default): segments reaching past the duration are clipped to it and
        those starting after it dropped, each with a counted warning; "keep": written to
        ground_truth.json as annotated (what the official evaluation of the 212-video set does), still
        counted as warnings.
      keep_unlabeled: keep annotated videos without any action segment (e.g. THUMOS14's
        video_test_0001292, only Ambiguous); they are skipped by default, as in Thumos14reduced.
      progress: show progress (a bar on a terminal, log lines otherwise).
      progress_every: videos between log lines when not on a terminal.
      feature_source: programmatic use only: an object with the `features.FeatureSource` methods used
        instead of the layout's reader (custom layouts, synthetic benchmarks); `features` then only
        names it in messages and is hashed into dataset.json if it is a file.

    Returns:
      0 on success (the summary is printed to stdout).

    Raises:
      StpnError: on any bad input, naming the file and the problem; nothing in `out` changes then.
    """
    if layout not in LAYOUTS:
        raise StpnError(f"unknown layout {layout!r}; expected one of {', '.join(sorted(LAYOUTS))}")
    if segments_outside not in ("clip", "keep"):
        raise StpnError(f"segments_outside must be 'clip' or 'keep', got {segments_outside!r}")
    if snippet_time not in ("fixed", "duration"):
        raise StpnError(f"snippet_time must be 'fixed' or 'duration', got {snippet_time!r}")
    if feature_dim is not None and feature_dim < 1:
        raise StpnError(f"feature_dim must be >= 1, got {feature_dim}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise StpnError(f"{out}: output exists and is not a directory")
    family, reader_kind = LAYOUTS[layout]
    warnings = _Warnings(strict)
    started = time.monotonic()

    # ---- Annotations: read and check everything before touching the output. ----
    duration_map = ann.read_thumos14_durations(durations) if durations else None
    kind = _annotation_kind(annotations)
    if reader_kind == "joint_npy" and kind != "reduced":
        raise StpnError(f"{annotations}: layout {layout} needs the Thumos14reduced annotation folder "
                        "(videoname.npy is what the joint feature array is aligned with)")
    records, annotation_files = _read_annotations(annotations, kind, allow_pickle, duration_map)
    if not records:
        raise StpnError(f"{annotations}: no annotated videos")
    seen: set[str] = set()
    for r in records:
        if r.video_id in seen:  # the toolkit reader cannot produce this, a JSON/array source can
            raise StpnError(f"{annotations}: duplicate video id {r.video_id!r}")
        seen.add(r.video_id)

    split_of = SPLITS[family]
    excluded = set(exclude_videos) | (set(THUMOS14_EXCLUDED_FOR_210) if thumos14_210 else set())
    for vid in sorted(excluded - seen):
        warnings.warn("unknown_exclude", f"{annotations}: excluded video {vid!r} is not annotated")
    info: Counter[str] = Counter()
    selected: list[tuple[str, ann.VideoRecord]] = []
    for r in records:
        if r.subset not in split_of:
            raise StpnError(f"{annotations}: video {r.video_id!r} has subset {r.subset!r}; "
                            f"{family} expects one of {sorted(split_of)}")
        split = split_of[r.subset]
        if split is None:
            info[f"videos of subset {r.subset!r} (no annotations, not built)"] += 1
        elif r.video_id in excluded:
            info["videos excluded on request"] += 1
        elif not r.segments and not keep_unlabeled:
            info["annotated videos without action segments (skipped; keep_unlabeled keeps them)"] += 1
        else:
            selected.append((split, r))
    if not selected:
        raise StpnError(f"{annotations}: no videos left to build after excluding {len(excluded)} and "
                        "mapping subsets to splits")

    if classes:
        class_names = _read_classes(classes)
    elif family == "thumos14":
        class_names = list(ann.THUMOS14_CLASSES)
    else:
        class_names = (_taxonomy_leaves(annotations) if kind == "json" else []) or \
            sorted({label for r in records for label in r.labels})
    class_index = {name: i for i, name in enumerate(class_names)}
    for _, r in selected:
        for label in r.labels:
            if label not in class_index:
                raise StpnError(f"{annotations}: video {r.video_id!r} has label {label!r}, which is not "
                                f"in the {len(class_names)}-class list"
                                f"{' ' + classes if classes else ' of ' + family}")

    # ---- Features. ----
    timing = {"fps": fps or feat.DEFAULT_FPS, "stride_frames": stride_frames or feat.DEFAULT_STRIDE_FRAMES}
    source: feat.FeatureSource
    if feature_source is not None:
        source = feature_source
    elif reader_kind == "joint_npy":
        if os.path.isdir(features):
            features = os.path.join(features, THUMOS14_JOINT_FEATURES)
        if os.path.isfile(os.path.join(annotations, "extracted_fps.npy")):
            logging.info("%s says 10 fps; the Thumos14reduced features are 25 fps / 16-frame snippets "
                         "(spec §5), which is what is used", os.path.join(annotations, "extracted_fps.npy"))
        source = feat.JointNpyFeatures(
            features, _video_names(annotations), allow_pickle=allow_pickle, **timing)
    elif reader_kind == "npy":
        source = feat.PerVideoNpyFeatures(features, **timing)
    else:
        source = feat.H5Features(features, **timing)

    if getattr(source, "unfinished", None):
        info["feature videos without their meta json (unfinished extraction, ignored)"] += \
            len(source.unfinished)
    split_names = sorted({split for split, _ in selected}, key=["train", "test"].index)
    counts_wanted = {s: sum(1 for sp, _ in selected if sp == s) for s in split_names}
    shards_per_split = {}
    for s in split_names:
        n = num_shards.get(s) if isinstance(num_shards, Mapping) else num_shards
        n = _default_num_shards(counts_wanted[s]) if n is None else int(n)
        if n < 1:
            raise StpnError(f"num_shards for split {s!r} must be >= 1, got {n}")
        shards_per_split[s] = n

    built: list[ann.VideoRecord] = []
    built_ids: list[str] = []
    per_split = Counter()
    snippets = Counter()
    timings: Counter[tuple[float, int]] = Counter()
    dim = feature_dim
    meta_path = os.path.join(out, tfrecord.METADATA_FILE)
    bar = _Progress(len(selected), progress, progress_every)
    try:
        os.makedirs(out, exist_ok=True)
        writers = {s: tfrecord.ShardedWriter(out, s, shards_per_split[s]) for s in split_names}
        # ExitStack semantics by hand: every writer must see the exception so it deletes its temps.
        entered = []
        try:
            for s in split_names:
                writers[s].__enter__()
                entered.append(writers[s])
            for split, record in selected:
                bar.step()
                if not source.has(record.video_id):
                    warnings.warn("no_features", f"{features}: no features for annotated video "
                                                 f"{record.video_id} ({split}); skipped")
                    continue
                video = source.read(record.video_id)
                rgb, flow = _check_features(video, record.video_id, dim, max_length_gap, warnings)
                dim = rgb.shape[1] if dim is None else dim
                length = rgb.shape[0]
                # Authoritative durations clip segments; an estimate from the feature length does not.
                duration = record.duration
                if duration is None:
                    duration = video.duration
                if duration is None and duration_map is not None:
                    duration = duration_map.get(record.video_id)
                video_fps, video_stride = video.fps, video.stride_frames
                if duration is None:
                    duration = length * video_stride / video_fps
                    info["durations estimated from the feature length"] += 1
                    segments = record.segments
                else:
                    if duration <= 0:
                        raise StpnError(f"{annotations}: video {record.video_id} has duration {duration}")
                    segments = _clip_segments(record, duration, warnings, annotations,
                                              keep=segments_outside == "keep")
                if snippet_time == "duration":
                    # Features resampled to a fixed count: L snippets span the whole video.
                    video_fps = length * video_stride / duration
                labels = tuple(sorted({s.label for s in segments}))
                writers[split].write(tfrecord.make_example(
                    video_id=record.video_id, subset=split, rgb=rgb, flow=flow,
                    labels=[class_index[name] for name in labels], duration=duration, fps=video_fps,
                    stride_frames=video_stride))
                built.append(dataclasses.replace(record, subset=split, duration=float(duration),
                                                 labels=labels, segments=segments))
                built_ids.append(record.video_id)
                per_split[split] += 1
                snippets[split] += length
                timings[(float(video.fps), int(video_stride))] += 1
            if not built:
                raise StpnError(f"{features}: none of the {len(selected)} annotated videos has features")
            # The old dataset stops looking complete before its shards are replaced.
            if os.path.exists(meta_path):
                os.remove(meta_path)
        except BaseException:
            exc = sys.exc_info()
            for w in reversed(entered):
                w.__exit__(*exc)
            raise
        for w in entered:
            w.__exit__(None, None, None)
    finally:
        source.close()
    # Splits of an earlier build that this one does not have would otherwise linger.
    for name in os.listdir(out):
        m = tfrecord.SHARD_RE.match(name)
        if m and m.group("split") not in split_names:
            os.remove(os.path.join(out, name))

    # ---- Ground truth and metadata (metadata last: it marks the directory complete). ----
    ann.write_activitynet_json(built, os.path.join(out, tfrecord.GROUND_TRUTH_FILE))
    sources = [file_entry(p) for p in annotation_files]
    if durations:
        sources += [file_entry(os.path.join(durations, n)) for n in ("videoname.npy", "duration.npy")]
    if feature_source is not None:
        sources += [file_entry(p) for p in source.source_files(built_ids) if os.path.isfile(p)]
    elif reader_kind == "npy":
        sources.append(_folder_entry(features, source.source_files(built_ids)))
    else:
        sources.append(file_entry(features))
    if classes:
        sources.append(file_entry(classes))
    (main_fps, main_stride), _ = timings.most_common(1)[0]
    metadata = {
        "name": dataset_name or family,
        "layout": layout,
        "classes": class_names,
        "feature_dim": int(dim),
        "fps": main_fps,
        "stride_frames": main_stride,
        "snippet_time": snippet_time,
        "splits": {s: {"num_videos": per_split[s], "num_snippets": snippets[s],
                       "shards": [tfrecord.shard_name(s, i, shards_per_split[s])
                                  for i in range(shards_per_split[s])]}
                   for s in split_names},
        "class_counts": {s: _class_counts(built, s, class_names) for s in split_names},
        "timings": [{"fps": f, "stride_frames": k, "num_videos": n} for (f, k), n in sorted(timings.items())],
        "sources": sources,
        "options": {"allow_pickle": allow_pickle, "strict": strict,
                    "exclude_videos": sorted(excluded), "max_length_gap": max_length_gap,
                    "segments_outside": segments_outside, "snippet_time": snippet_time,
                    "keep_unlabeled": keep_unlabeled},
        "warnings": dict(sorted(warnings.counts.items())),
    }
    ann.atomic_write_text(meta_path, json.dumps(metadata, indent=1, sort_keys=False) + "\n")

    _print_summary(out, metadata, warnings, info, family, time.monotonic() - started)
    return 0


def _class_counts(records: Sequence[ann.VideoRecord], split: str, class_names: Sequence[str]) -> dict[str, int]:
    """Videos per class in one split."""
    counts = Counter(label for r in records if r.subset == split for label in r.labels)
    return {name: counts.get(name, 0) for name in class_names}


def _print_summary(out: str, metadata: dict[str, Any], warnings: _Warnings, info: Counter[str],
                   family: str, seconds: float) -> None:
    lines = [f"build-dataset: wrote {out} ({metadata['name']}, {len(metadata['classes'])} classes, "
             f"D={metadata['feature_dim']} per stream, {metadata['fps']:g} fps / "
             f"{metadata['stride_frames']} frames per snippet) in {seconds:.1f} s"]
    for split, s in metadata["splits"].items():
        lines.append(f"  {split}: {s['num_videos']} videos, {s['num_snippets']} snippets, "
                     f"{len(s['shards'])} shard(s)")
    if family == "thumos14":
        lines.append("  (THUMOS14 protocol: train 200 videos; test 212, or 210 with thumos14_210)")
    for text, n in sorted(info.items()):
        lines.append(f"  note: {n} {text}")
    for kind, n in sorted(warnings.counts.items()):
        lines.append(f"  WARNING: {n} {_WARNING_TEXT.get(kind, kind)}")
    if not warnings.counts:
        lines.append("  no warnings")
    print("\n".join(lines))

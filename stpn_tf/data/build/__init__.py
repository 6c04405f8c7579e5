"""`stpn build-dataset`: public feature releases + annotations -> TFRecord shards, dataset.json, ground truth.

The build streams: annotations (small) are read and checked up front, then features are read, checked
and written one video at a time. Output is atomic: shards are written under hidden temporary names,
the old `dataset.json` is removed just before the new shards are renamed into place, and the new
`dataset.json` is written last, so a killed build never leaves a directory that looks complete. The same
inputs give byte-identical outputs, so re-running is idempotent. Each stream goes to its own shards
(`<split>-rgb-*.tfrecord`, `<split>-flow-*.tfrecord`; `storage="combined"` writes the earlier one-record-
per-video shards), see stpn_tf.artifacts.shards.

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

The build runs in named phases, one module each: `select` (annotations -> the videos to build and the
class list), `sources` (the feature reader, source hashes), `shards` (per-video checks and the shard
writer), `summary` (dataset.json's DatasetInfo and the printed summary); `checks` holds the warnings and
per-video checks they share.

Splits: THUMOS14 validation -> "train" (200 videos), test -> "test" (212 videos; 210 with
`thumos14_210=True`, which excludes video_test_0000270 and video_test_0001496). ActivityNet training ->
"train", validation -> "test"; `testing` has no annotations and is not built.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from stpn_tf.artifacts import annotations as ann
from stpn_tf.artifacts.shards import check_storage
from stpn_tf.data import features as feat
from stpn_tf.data.features import LAYOUTS
from stpn_tf.data.build.checks import BuildWarnings, Progress
from stpn_tf.data.build.select import SPLITS, THUMOS14_EXCLUDED_FOR_210, select_videos
from stpn_tf.data.build.shards import shard_counts, write_shards
from stpn_tf.data.build.sources import THUMOS14_JOINT_FEATURES, file_entry, open_feature_source, source_entries
from stpn_tf.data.build.summary import dataset_info, print_summary
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts import dataset_dir

__all__ = ["LAYOUTS", "SPLITS", "THUMOS14_EXCLUDED_FOR_210", "THUMOS14_JOINT_FEATURES", "file_entry",
           "run_build_dataset"]

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
    storage: str = "by_stream",
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
      storage: "by_stream" (default): each stream in its own shards, `<split>-rgb-*.tfrecord` and
        `<split>-flow-*.tfrecord`, so training one stream reads half the bytes; "combined": one record
        per video with both streams, `<split>-*.tfrecord` (what earlier builds wrote). Every reader
        takes both (stpn_tf.artifacts.shards).

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
    check_storage(storage)
    if feature_dim is not None and feature_dim < 1:
        raise StpnError(f"feature_dim must be >= 1, got {feature_dim}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise StpnError(f"{out}: output exists and is not a directory")
    family, reader = LAYOUTS[layout]
    warnings = BuildWarnings(strict)
    started = time.monotonic()

    # Phase 1: annotations, read and checked before the output is touched.
    selection = select_videos(family=family, annotations=annotations, allow_pickle=allow_pickle,
                              durations=durations, exclude_videos=exclude_videos, thumos14_210=thumos14_210,
                              keep_unlabeled=keep_unlabeled, classes=classes, joint_features=reader == "joint_npy",
                              warnings=warnings)
    # Phase 2: the feature source.
    source = feature_source if feature_source is not None else open_feature_source(
        reader=reader, features=features, annotations=annotations, fps=fps, stride_frames=stride_frames,
        allow_pickle=allow_pickle)
    if getattr(source, "unfinished", None):
        selection.info["feature videos without their meta json (unfinished extraction, ignored)"] += \
            len(source.unfinished)
    shards_per_split = shard_counts(selection, num_shards)
    # Phase 3: the shards.
    try:
        written = write_shards(selection, source, out=out, features=features, annotations=annotations,
                               shards_per_split=shards_per_split, feature_dim=feature_dim,
                               max_length_gap=max_length_gap, segments_outside=segments_outside,
                               snippet_time=snippet_time, warnings=warnings,
                               progress=Progress(len(selection.selected), progress, progress_every),
                               storage=storage)
    finally:
        source.close()
    # Phase 4: ground truth, then dataset.json (last: it marks the directory complete), then the summary.
    ann.write_activitynet_json(written.records, dataset_dir.ground_truth_path(out))
    sources = source_entries(annotation_files=selection.annotation_files, durations=durations, classes=classes,
                             features=features, source=source, reader=reader,
                             custom_source=feature_source is not None, built_ids=written.video_ids)
    options = {"allow_pickle": allow_pickle, "strict": strict, "exclude_videos": sorted(selection.excluded),
               "max_length_gap": max_length_gap, "segments_outside": segments_outside, "snippet_time": snippet_time,
               "keep_unlabeled": keep_unlabeled, "storage": storage}
    info = dataset_info(name=dataset_name or family, layout=layout, selection=selection, written=written,
                        snippet_time=snippet_time, sources=sources, options=options, warnings=warnings)
    dataset_dir.write_dataset_info(out, info)
    print_summary(out, info, warnings, selection.info, family, time.monotonic() - started)
    return 0

"""Build-dataset phase 3: read, check and write every selected video into the split's shards.

Shards are written under hidden temporary names and renamed only when every video of every split is
done; the old `dataset.json` is removed just before the renames, so a killed build never leaves a
directory that looks complete.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections import Counter
from collections.abc import Mapping

from stpn_tf.artifacts import annotations as ann
from stpn_tf.artifacts.shards import BY_STREAM, DEFAULT_STORAGE, check_storage, shard_split
from stpn_tf.data import features as feat
from stpn_tf.data.records.schema import make_example, make_stream_examples
from stpn_tf.data.records.writer import ShardedWriter
from stpn_tf.data.build.checks import BuildWarnings, Progress, check_features, clip_segments
from stpn_tf.data.build.select import Selection
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts import dataset_dir


@dataclasses.dataclass
class Written:
    """What phase 3 wrote.

    Attributes:
      records: The built videos' annotations (dataset split as subset, duration, clipped segments).
      per_split: Videos per split.
      snippets: Real snippets per split.
      timings: Videos per (fps, stride_frames).
      feature_dim: D per stream.
      shards_per_split: Shard count per split.
      storage: The shards' storage (stpn_tf.artifacts.shards.STORAGES).
      shard_files: {split: the shard file names, in `list_shards` order}.
      shard_records: {split: {shard file name: records it holds}}.
    """

    records: list[ann.VideoRecord]
    per_split: Counter
    snippets: Counter
    timings: Counter
    feature_dim: int
    shards_per_split: dict[str, int]
    storage: str = DEFAULT_STORAGE
    shard_files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    shard_records: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @property
    def video_ids(self) -> list[str]:
        return [r.video_id for r in self.records]


def default_num_shards(num_videos: int) -> int:
    # Enough shards for file-level shuffling and parallel reads, about 200 videos per shard at scale.
    return max(1, min(num_videos, max(4, math.ceil(num_videos / 200))))


def shard_counts(selection: Selection, num_shards: int | Mapping[str, int] | None) -> dict[str, int]:
    """Shards per split: one int for all splits, {split: int}, or None for `default_num_shards`."""
    counts = {}
    for split in selection.split_names:
        n = num_shards.get(split) if isinstance(num_shards, Mapping) else num_shards
        n = default_num_shards(selection.count(split)) if n is None else int(n)
        if n < 1:
            raise StpnError(f"num_shards for split {split!r} must be >= 1, got {n}")
        counts[split] = n
    return counts


def write_shards(selection: Selection, source: feat.FeatureSource, *, out: str, features: str, annotations: str,
                 shards_per_split: dict[str, int], feature_dim: int | None, max_length_gap: int,
                 segments_outside: str, snippet_time: str, warnings: BuildWarnings, progress: Progress,
                 storage: str = DEFAULT_STORAGE) -> Written:
    """Phase 3 of `run_build_dataset`; on any error nothing in `out` changes (temporaries are removed).

    `storage` "by_stream" (the default) writes each stream in its own shards, "combined" one record per
    video with both streams (stpn_tf.artifacts.shards).
    """
    class_index = {name: i for i, name in enumerate(selection.class_names)}
    written = Written(records=[], per_split=Counter(), snippets=Counter(), timings=Counter(), feature_dim=0,
                      shards_per_split=shards_per_split, storage=check_storage(storage))
    make_records = make_stream_examples if storage == BY_STREAM else make_example
    dim = feature_dim
    os.makedirs(out, exist_ok=True)
    writers = {s: ShardedWriter(out, s, shards_per_split[s], storage=storage) for s in selection.split_names}
    # ExitStack semantics by hand: every writer must see the exception so it deletes its temporaries.
    entered = []
    try:
        for writer in writers.values():
            writer.__enter__()
            entered.append(writer)
        for split, record in selection.selected:
            progress.step()
            if not source.has(record.video_id):
                warnings.warn("no_features", f"{features}: no features for annotated video {record.video_id} "
                                             f"({split}); skipped")
                continue
            video = source.read(record.video_id)
            rgb, flow = check_features(video, record.video_id, dim, max_length_gap, warnings)
            dim = rgb.shape[1] if dim is None else dim
            length = rgb.shape[0]
            # Authoritative durations clip segments; an estimate from the feature length does not.
            duration = record.duration
            if duration is None:
                duration = video.duration
            if duration is None and selection.durations is not None:
                duration = selection.durations.get(record.video_id)
            video_fps, video_stride = video.fps, video.stride_frames
            if duration is None:
                duration = length * video_stride / video_fps
                selection.info["durations estimated from the feature length"] += 1
                segments = record.segments
            else:
                if duration <= 0:
                    raise StpnError(f"{annotations}: video {record.video_id} has duration {duration}")
                segments = clip_segments(record, duration, warnings, annotations, keep=segments_outside == "keep")
            if snippet_time == "duration":
                # Features resampled to a fixed count: L snippets span the whole video.
                video_fps = length * video_stride / duration
            labels = tuple(sorted({s.label for s in segments}))
            writers[split].write(make_records(
                video_id=record.video_id, subset=split, rgb=rgb, flow=flow,
                labels=[class_index[name] for name in labels], duration=duration, fps=video_fps,
                stride_frames=video_stride))
            written.records.append(dataclasses.replace(record, subset=split, duration=float(duration), labels=labels,
                                                       segments=segments))
            written.per_split[split] += 1
            written.snippets[split] += length
            written.timings[(float(video.fps), int(video_stride))] += 1
        if not written.records:
            raise StpnError(f"{features}: none of the {len(selection.selected)} annotated videos has features")
        # The old dataset stops looking complete before its shards are replaced.
        dataset_dir.mark_incomplete(out)
    except BaseException:
        exc = sys.exc_info()
        for w in reversed(entered):
            w.__exit__(*exc)
        raise
    for w in entered:
        w.__exit__(None, None, None)
    written.shard_files = {s: [os.path.basename(p) for p in w.shards] for s, w in writers.items()}
    written.shard_records = {s: w.shard_records for s, w in writers.items()}
    # Splits of an earlier build that this one does not have would otherwise linger (either storage).
    for name in os.listdir(out):
        split = shard_split(name)
        if split is not None and split not in selection.split_names:
            os.remove(os.path.join(out, name))
    written.feature_dim = int(dim)
    return written

"""Build-dataset phase 4: the DatasetInfo of what was written, and the summary printed at the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from stpn_tf.artifacts import annotations as ann
from stpn_tf.artifacts.shards import BY_STREAM, shard_names, storage_of
from stpn_tf.data.build.checks import WARNING_TEXT, BuildWarnings
from stpn_tf.data.build.select import Selection
from stpn_tf.data.build.shards import Written
from stpn_tf.artifacts.dataset_dir import DatasetInfo, SplitInfo


def class_counts(records: Sequence[ann.VideoRecord], split: str, class_names: Sequence[str]) -> dict[str, int]:
    """Videos per class in one split."""
    counts = Counter(label for r in records if r.subset == split for label in r.labels)
    return {name: counts.get(name, 0) for name in class_names}


def dataset_info(*, name: str, layout: str, selection: Selection, written: Written, snippet_time: str,
                 sources: list[dict[str, Any]], options: dict[str, Any], warnings: BuildWarnings) -> DatasetInfo:
    (main_fps, main_stride), _ = written.timings.most_common(1)[0]
    splits = {s: SplitInfo(num_videos=written.per_split[s], num_snippets=written.snippets[s],
                           shards=list(written.shard_files.get(s) or shard_names(
                               s, written.shards_per_split[s], written.storage)),
                           shard_records=dict(written.shard_records.get(s, {})))
              for s in selection.split_names}
    return DatasetInfo(
        name=name, layout=layout, classes=selection.class_names, feature_dim=written.feature_dim, fps=main_fps,
        stride_frames=main_stride, snippet_time=snippet_time, splits=splits,
        class_counts={s: class_counts(written.records, s, selection.class_names) for s in selection.split_names},
        timings=[{"fps": f, "stride_frames": k, "num_videos": n} for (f, k), n in sorted(written.timings.items())],
        sources=sources, options=options, warnings=dict(sorted(warnings.counts.items())))


def print_summary(out: str, info: DatasetInfo, warnings: BuildWarnings, notes: Counter, family: str,
                  seconds: float) -> None:
    lines = [f"build-dataset: wrote {out} ({info.name}, {len(info.classes)} classes, D={info.feature_dim} per "
             f"stream, {info.fps:g} fps / {info.stride_frames} frames per snippet) in {seconds:.1f} s"]
    for split, s in info.splits.items():
        by_stream = storage_of(s.shards) == BY_STREAM
        shards = f"{len(s.shards) // 2} shard(s) per stream" if by_stream else f"{len(s.shards)} shard(s)"
        lines.append(f"  {split}: {s.num_videos} videos, {s.num_snippets} snippets, {shards}")
    if family == "thumos14":
        lines.append("  (THUMOS14 protocol: train 200 videos; test 212, or 210 with thumos14_210)")
    for text, n in sorted(notes.items()):
        lines.append(f"  note: {n} {text}")
    for kind, n in sorted(warnings.counts.items()):
        lines.append(f"  WARNING: {n} {WARNING_TEXT.get(kind, kind)}")
    if not warnings.counts:
        lines.append("  no warnings")
    print("\n".join(lines))

"""The dataset directory: TFRecord shards per split, `dataset.json` (a `DatasetInfo`), `ground_truth.json`.

    <dataset>/train-rgb-00000-of-00004.tfrecord ...   shards of each stream ("by_stream" storage, what
    <dataset>/train-flow-00000-of-00004.tfrecord ...  `stpn build-dataset` writes), or
    <dataset>/train-00000-of-00004.tfrecord ...       one record per video with both streams ("combined":
                                                      earlier builds, Beam, synthetic data); shard
                                                      names: stpn_tf.artifacts.shards, records:
                                                      stpn_tf.data.records
    <dataset>/dataset.json                         DatasetInfo; written last, it marks the directory complete;
                                                   records each shard file's record count, which every
                                                   reader checks (SplitInfo.shard_records)
    <dataset>/ground_truth.json                    ActivityNet-layout annotations of the built videos

Every writer (`stpn build-dataset`, the Beam extraction pipeline, the synthetic demo data) builds a
`DatasetInfo` and writes it with `write_dataset_info`; every reader uses `read_dataset_info`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_write_json

METADATA_FILE = "dataset.json"
GROUND_TRUTH_FILE = "ground_truth.json"


@dataclasses.dataclass
class SplitInfo:
    """One split of a dataset directory.

    Attributes:
      num_videos: Videos in the split.
      num_snippets: Real snippets over all its videos.
      shards: Shard file names (relative to the dataset directory); in the by_stream storage the rgb
        shards, then the flow shards.
      shard_records: {shard file name: records it holds} for every file of `shards`, written with them;
        every reader checks each file against it (stpn_tf.data.records.reader). Empty for datasets built
        before it was recorded.
    """

    num_videos: int
    num_snippets: int
    shards: list[str]
    shard_records: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DatasetInfo:
    """What `dataset.json` records about a built dataset.

    Attributes:
      name: Dataset name (e.g. "thumos14").
      classes: Class names; a label index in the TFRecords is a position in this list.
      feature_dim: D per stream.
      fps: Frame rate of the features (the most common one when videos differ).
      stride_frames: Frames per snippet.
      splits: {split name: SplitInfo}.
      layout: How it was made ("thumos14_npy", ..., "beam_extract", "synthetic").
      snippet_time: "fixed" (a snippet is stride_frames / fps seconds) or "duration".
      class_counts: {split: {class: videos}}.
      timings: [{"fps", "stride_frames", "num_videos"}] when videos differ in timing.
      sources: [{"path", "bytes", "sha256", ...}] of the inputs.
      options: Build options that change the output.
      warnings: {warning kind: count} of the build.
      synthetic: Generator settings of a synthetic dataset, else None.
    """

    name: str
    classes: list[str]
    feature_dim: int
    fps: float
    stride_frames: int
    splits: dict[str, SplitInfo]
    layout: str = ""
    snippet_time: str = "fixed"
    class_counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    timings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: dict[str, int] = dataclasses.field(default_factory=dict)
    synthetic: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.synthetic is None:
            del out["synthetic"]
        return out

    def with_split(self, split: str, info: SplitInfo, sources: Sequence[Mapping[str, Any]] = ()) -> "DatasetInfo":
        """A copy with `split` replaced (or added) and `sources` appended (duplicates dropped)."""
        splits = {s: v for s, v in self.splits.items() if s != split}
        splits[split] = info
        kept = [s for s in self.sources if s not in sources]
        return dataclasses.replace(self, splits=dict(sorted(splits.items())), sources=kept + list(sources))

    def same_features(self, other: "DatasetInfo") -> bool:
        """True when both describe features of the same classes, size and timing."""
        return (self.classes == other.classes and self.feature_dim == other.feature_dim
                and float(self.fps) == float(other.fps) and self.stride_frames == other.stride_frames)


def metadata_path(dataset_dir: str) -> str:
    return os.path.join(dataset_dir, METADATA_FILE)


def ground_truth_path(dataset_dir: str) -> str:
    return os.path.join(dataset_dir, GROUND_TRUTH_FILE)


def is_dataset_dir(path: str) -> bool:
    return os.path.isfile(metadata_path(path))


def write_dataset_info(dataset_dir: str, info: DatasetInfo) -> None:
    """Writes `dataset.json` atomically (call it last: it marks the directory complete)."""
    atomic_write_json(metadata_path(dataset_dir), info.to_json())


def mark_incomplete(dataset_dir: str) -> None:
    """Removes `dataset.json` so a directory whose shards are being replaced stops looking complete."""
    path = metadata_path(dataset_dir)
    if os.path.exists(path):
        os.remove(path)


_REQUIRED = {"name": str, "classes": list, "feature_dim": int, "fps": (int, float), "stride_frames": int,
             "splits": dict}


def dataset_info_from_json(meta: Any, path: str) -> DatasetInfo:
    """Checks a parsed `dataset.json` and returns its DatasetInfo; errors name `path`."""
    if not isinstance(meta, dict):
        raise StpnError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key, types in _REQUIRED.items():
        if key not in meta:
            raise StpnError(f"{path}: missing key {key!r}")
        if not isinstance(meta[key], types) or isinstance(meta[key], bool):
            raise StpnError(f"{path}: key {key!r} has the wrong type {type(meta[key]).__name__}")
    if not meta["classes"] or not all(isinstance(c, str) for c in meta["classes"]):
        raise StpnError(f"{path}: 'classes' must be a non-empty list of names")
    if meta["feature_dim"] < 1:
        raise StpnError(f"{path}: 'feature_dim' must be >= 1, got {meta['feature_dim']}")
    splits = {}
    for split, entry in meta["splits"].items():
        if not isinstance(entry, dict) or "num_videos" not in entry or "shards" not in entry:
            raise StpnError(f"{path}: split {split!r} needs 'num_videos' and 'shards'")
        records = entry.get("shard_records", {})
        if not isinstance(records, dict) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                    for n in records.values()):
            raise StpnError(f"{path}: split {split!r}: 'shard_records' must map shard file names to record counts")
        shards = [str(s) for s in entry["shards"]]
        if records and set(records) != set(shards):
            raise StpnError(f"{path}: split {split!r}: 'shard_records' names other files than 'shards'")
        splits[split] = SplitInfo(num_videos=int(entry["num_videos"]), num_snippets=int(entry.get("num_snippets", 0)),
                                  shards=shards, shard_records={str(k): int(v) for k, v in records.items()})
    known = {f.name for f in dataclasses.fields(DatasetInfo)}
    extra = {k: v for k, v in meta.items() if k in known and k not in _REQUIRED and k != "splits"}
    return DatasetInfo(name=meta["name"], classes=list(meta["classes"]), feature_dim=int(meta["feature_dim"]),
                       fps=float(meta["fps"]), stride_frames=int(meta["stride_frames"]), splits=splits, **extra)


def read_dataset_info(dataset_dir: str) -> DatasetInfo:
    """Reads and checks `<dataset_dir>/dataset.json`.

    Raises:
      StpnError: the directory or file is missing (an unfinished build), not JSON, or lacks a required key.
    """
    import tensorflow as tf  # gfile: dataset directories may live on gs://

    path = metadata_path(dataset_dir)
    if not tf.io.gfile.exists(path):
        if not tf.io.gfile.isdir(dataset_dir):
            raise StpnError(f"{dataset_dir}: dataset directory not found")
        raise StpnError(f"{path}: dataset metadata not found (not a built dataset, or its build did not "
                        "finish; run `stpn build-dataset`)")
    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            meta = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StpnError(f"{path}: malformed JSON ({error})") from None
    return dataset_info_from_json(meta, path)


def recorded_shard_records(paths: Sequence[str]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """How many records each shard file must hold, as the `dataset.json` beside it records.

    Args:
      paths: Shard files (any directories; a directory without `dataset.json` records nothing).

    Returns:
      ({path: records} for the files whose dataset.json records a count, {dataset.json path: [the files of
      `paths` it lists without counts]}: datasets built before the counts were recorded).

    Raises:
      StpnError: a `dataset.json` beside the files is malformed, or records counts but does not list one
        of the files (a shard from another build).
    """
    import tensorflow as tf  # gfile: dataset directories may live on gs://

    by_dir: dict[str, list[str]] = {}
    for path in paths:
        by_dir.setdefault(os.path.dirname(str(path)), []).append(str(path))
    counts: dict[str, int] = {}
    unrecorded: dict[str, list[str]] = {}
    for directory, files in by_dir.items():
        if not tf.io.gfile.exists(metadata_path(directory)):
            continue
        info = read_dataset_info(directory)
        table = {name: n for s in info.splits.values() for name, n in s.shard_records.items()}
        listed = {name for s in info.splits.values() for name in s.shards}
        for path in files:
            name = os.path.basename(path)
            if name in table:
                counts[path] = table[name]
            elif name in listed or not table:
                unrecorded.setdefault(metadata_path(directory), []).append(path)
            else:
                raise StpnError(f"{path}: {metadata_path(directory)} does not list this shard (it records the "
                                f"record counts of {len(table)} other shard files); rebuild the dataset")
    return counts, unrecorded


def add_split(dataset_dir: str, info: DatasetInfo, split: str, split_info: SplitInfo, *,
              sources: Sequence[Mapping[str, Any]] = (), records: Sequence[Any] = ()) -> DatasetInfo:
    """Adds (or replaces) one split of a dataset directory whose other splits stay as they are.

    `dataset.json` keeps the other splits and sources of an existing dataset, whose features must be
    the same as `info`'s; with `records` (stpn_tf.artifacts.annotations.VideoRecord of the split's
    videos), `ground_truth.json` keeps the other splits' videos and gets these with `split` as subset.
    Both are written atomically, `dataset.json` last.

    Args:
      dataset_dir: The dataset directory (its shards of `split` are already in place).
      info: What `dataset.json` says about the features (its `splits` and `sources` are replaced).
      split: The split written.
      split_info: Its videos, snippets and shard names.
      sources: Input files of this split, appended to the dataset's.
      records: Ground truth of the split's videos, or none.

    Returns:
      The DatasetInfo written.

    Raises:
      StpnError: the directory holds a dataset of other classes, feature size, fps or stride.
    """
    from stpn_tf.artifacts import annotations as ann

    info = dataclasses.replace(info, splits={}, sources=[])
    if is_dataset_dir(dataset_dir):
        old = read_dataset_info(dataset_dir)
        if not old.same_features(info):
            raise StpnError(f"{metadata_path(dataset_dir)}: existing dataset has other classes, feature "
                            "size, fps or stride; use a new dataset directory")
        info = dataclasses.replace(info, splits=old.splits, sources=old.sources)
    info = info.with_split(split, split_info, sources)
    if records:
        truth_path = ground_truth_path(dataset_dir)
        merged = {}
        if os.path.exists(truth_path):
            merged = {r.video_id: r for r in ann.read_activitynet_json(truth_path) if r.subset != split}
        for record in records:
            merged[record.video_id] = dataclasses.replace(record, subset=split)
        ann.write_activitynet_json(list(merged.values()), truth_path)
    write_dataset_info(dataset_dir, info)
    return info

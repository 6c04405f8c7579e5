"""Build-dataset phase 1: read and check the annotations, map subsets to splits, choose the videos and the
class list. Everything here runs before the output directory is touched."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from stpn_tf.artifacts import annotations as ann
from stpn_tf.data.build.checks import BuildWarnings
from stpn_tf.core.errors import StpnError

# Source subset name -> dataset split; None = not built (no annotations).
SPLITS: dict[str, dict[str, str | None]] = {
    "thumos14": {"validation": "train", "train": "train", "test": "test"},
    "activitynet": {"training": "train", "validation": "test", "testing": None},
}

# Video 270 has annotations far beyond its duration and 1496 is usually dropped with it (spec section 5).
THUMOS14_EXCLUDED_FOR_210 = ("video_test_0000270", "video_test_0001496")


def check_json_duplicate_ids(path: str) -> None:
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


def video_names(folder: str) -> list[str]:
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


def annotation_kind(path: str) -> str:
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


def read_annotations(path: str, kind: str, allow_pickle: bool, durations: Mapping[str, float] | None,
                     warnings: BuildWarnings) -> tuple[list[ann.VideoRecord], list[str]]:
    """Returns (records, files read)."""
    if kind == "json":
        check_json_duplicate_ids(path)
        records = ann.read_activitynet_json(path)
        split_files = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(path)), "split_*.txt")))
        if split_files:
            records = apply_split_files(path, records, split_files, warnings)
        return records, [path] + split_files
    if kind == "reduced":
        video_names(path)  # duplicate ids
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


def apply_split_files(path: str, records: list[ann.VideoRecord], split_files: Sequence[str],
                      warnings: BuildWarnings) -> list[ann.VideoRecord]:
    """The BaS-Net layout's `split_<subset>.txt` files (next to its gt.json) define the videos of each subset.

    Each is checked against the JSON: a video listed twice (in one file or in two), a video the JSON does
    not have, or one whose JSON subset is another is an error; JSON videos no split file lists are left
    out with a counted warning.
    """
    by_id = {r.video_id: r for r in records}
    listed: dict[str, tuple[str, str]] = {}  # video -> (split file, where)
    for split_file in split_files:
        first_line: dict[str, str] = {}
        for where, (video,) in ann.text_rows(split_file, 1, "video_name"):
            if video in first_line:
                raise StpnError(f"{where}: video {video!r} listed twice (also {first_line[video]})")
            first_line[video] = where.rsplit(": ", 1)[-1]
            if video in listed:
                raise StpnError(f"{where}: video {video!r} is also listed in {listed[video][0]}")
            listed[video] = (split_file, where)
        if not first_line:
            raise StpnError(f"{split_file}: lists no videos")
    for video, (split_file, where) in listed.items():
        subset = os.path.basename(split_file)[len("split_"):-len(".txt")]
        if video not in by_id:
            raise StpnError(f"{where}: video {video!r} is not in {path}")
        if by_id[video].subset != subset:
            raise StpnError(f"{where}: video {video!r} is in split {subset!r} but {path} gives it subset "
                            f"{by_id[video].subset!r}")
    for record in records:
        if record.video_id not in listed:
            warnings.warn("not_in_split_files", f"{path}: video {record.video_id!r} is in no split file "
                                                f"({', '.join(os.path.basename(f) for f in split_files)}); "
                                                "left out")
    return [r for r in records if r.video_id in listed]


def taxonomy_leaves(path: str) -> list[str]:
    """Sorted leaf names of an ActivityNet "taxonomy" (the 200 classes of v1.3); [] when absent."""
    with open(path, encoding="utf-8") as f:
        taxonomy = json.load(f).get("taxonomy") or []
    if not isinstance(taxonomy, list) or not all(isinstance(n, dict) and "nodeName" in n for n in taxonomy):
        raise StpnError(f"{path}: 'taxonomy' must be a list of nodes with 'nodeName'")
    parents = {n.get("parentName") for n in taxonomy}
    return sorted({n["nodeName"] for n in taxonomy if n["nodeName"] not in parents})


def read_classes(path: str) -> list[str]:
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


@dataclasses.dataclass
class Selection:
    """What phase 1 decided.

    Attributes:
      family: "thumos14" or "activitynet".
      annotation_kind: "json", "reduced" or "toolkit".
      annotation_files: The annotation files read (hashed into dataset.json).
      records: Every annotated video.
      selected: (split, record) of the videos to build, in annotation order.
      class_names: The class list; a label index is a position in it.
      excluded: Video ids left out on request.
      durations: Video id -> seconds from a `--durations` folder, or None.
      info: Counted notes for the summary (videos not built and why).
    """

    family: str
    annotation_kind: str
    annotation_files: list[str]
    records: list[ann.VideoRecord]
    selected: list[tuple[str, ann.VideoRecord]]
    class_names: list[str]
    excluded: set[str]
    durations: dict[str, float] | None
    info: Counter

    @property
    def split_names(self) -> list[str]:
        return sorted({split for split, _ in self.selected}, key=["train", "test"].index)

    def count(self, split: str) -> int:
        return sum(1 for s, _ in self.selected if s == split)


def select_videos(*, family: str, annotations: str, allow_pickle: bool, durations: str | None,
                  exclude_videos: Sequence[str], thumos14_210: bool, keep_unlabeled: bool, classes: str | None,
                  joint_features: bool, warnings: BuildWarnings) -> Selection:
    """Phase 1 of `run_build_dataset` (see its arguments)."""
    duration_map = ann.read_thumos14_durations(durations) if durations else None
    kind = annotation_kind(annotations)
    if joint_features and kind != "reduced":
        raise StpnError(f"{annotations}: the Thumos14reduced joint features need the Thumos14reduced annotation "
                        "folder (videoname.npy is what the joint feature array is aligned with)")
    records, annotation_files = read_annotations(annotations, kind, allow_pickle, duration_map, warnings)
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
        class_names = read_classes(classes)
    elif family == "thumos14":
        class_names = list(ann.THUMOS14_CLASSES)
    else:
        class_names = (taxonomy_leaves(annotations) if kind == "json" else []) or \
            sorted({label for r in records for label in r.labels})
    class_index = {name: i for i, name in enumerate(class_names)}
    for _, r in selected:
        for label in r.labels:
            if label not in class_index:
                raise StpnError(f"{annotations}: video {r.video_id!r} has label {label!r}, which is not "
                                f"in the {len(class_names)}-class list"
                                f"{' ' + classes if classes else ' of ' + family}")
    return Selection(family=family, annotation_kind=kind, annotation_files=annotation_files, records=records,
                     selected=selected, class_names=class_names, excluded=excluded, durations=duration_map,
                     info=info)

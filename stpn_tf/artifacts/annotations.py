"""Temporal action annotations from every layout users bring, as one `VideoRecord` type.

Readers:
  * THUMOS14 challenge toolkit txt folder (`<Class>_val.txt` / `<Class>_test.txt`, `Ambiguous_*.txt`).
  * "Thumos14reduced" numpy arrays (W-TALC family); the segment and label arrays are object arrays that
    only pickle can load, so that needs an explicit `allow_pickle=True`.
  * ActivityNet-layout ground truth JSON, including the BaS-Net variant (string segments, no duration)
    and an optional per-video `"ambiguous": [[s, e], ...]` list this project writes.

All times are seconds (floats). Malformed input raises `StpnError` naming the file and the entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Iterator

import numpy as np

from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_write_json

# The 20 THUMOS14 detection classes in detclasslist order (which is alphabetical).
THUMOS14_CLASSES: tuple[str, ...] = (
    "BaseballPitch",
    "BasketballDunk",
    "Billiards",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "Diving",
    "FrisbeeCatch",
    "GolfSwing",
    "HammerThrow",
    "HighJump",
    "JavelinThrow",
    "LongJump",
    "PoleVault",
    "Shotput",
    "SoccerPenalty",
    "TennisSwing",
    "ThrowDiscus",
    "VolleyballSpiking",
)

AMBIGUOUS = "Ambiguous"

# Toolkit file suffix for each subset name used by THUMOS14.
_TOOLKIT_SUFFIX = {"validation": "val", "test": "test"}


@dataclasses.dataclass(frozen=True)
class Segment:
    """One annotated action instance, in seconds."""

    start: float
    end: float
    label: str


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """Annotations of one video.

    Attributes:
      video_id: Video name as the source spells it.
      subset: Subset as the source names it (THUMOS14 "validation"/"test"; ActivityNet
        "training"/"validation"/"testing"; BaS-Net "train"/"test").
      duration: Seconds, or None when the source has none (BaS-Net gt.json).
      labels: Sorted unique video-level labels taken from `segments` (Ambiguous excluded).
      segments: Ground truth in file order.
      ambiguous: (start, end) of segments annotated "Ambiguous" (THUMOS14 only).
    """

    video_id: str
    subset: str
    duration: float | None
    labels: tuple[str, ...]
    segments: tuple[Segment, ...]
    ambiguous: tuple[tuple[float, float], ...] = ()


def make_record(video_id, subset, duration, segments, ambiguous=()) -> VideoRecord:
    segments = tuple(segments)
    labels = tuple(sorted({s.label for s in segments}))
    return VideoRecord(
        video_id=video_id,
        subset=subset,
        duration=duration,
        labels=labels,
        segments=segments,
        ambiguous=tuple(ambiguous),
    )


def _parse_time(value: Any, where: str) -> float:
    """A finite float from a number or numeric string (BaS-Net writes strings)."""
    if isinstance(value, bool):
        raise StpnError(f"{where}: expected a number of seconds, got {value!r}")
    if isinstance(value, (int, float, str)):
        try:
            out = float(value)
        except ValueError:
            raise StpnError(f"{where}: expected a number of seconds, got {value!r}") from None
    else:
        raise StpnError(f"{where}: expected a number of seconds, got {value!r}")
    if not math.isfinite(out):
        raise StpnError(f"{where}: time must be finite, got {value!r}")
    return out


def parse_interval(start: Any, end: Any, where: str) -> tuple[float, float]:
    """A `[start, end]` segment in seconds (finite, start <= end); `where` names it in errors."""
    s = _parse_time(start, where)
    e = _parse_time(end, where)
    if s > e:
        raise StpnError(f"{where}: segment start {s} is after its end {e}")
    return s, e


def read_text(path: str) -> str:
    """The UTF-8 text of `path`; a missing or undecodable file is a StpnError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise StpnError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise StpnError(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as e:
        raise StpnError(f"{path}: not UTF-8 text ({e.reason})") from None


def text_rows(path: str, num_fields: int, form: str) -> Iterator[tuple[str, list[str]]]:
    """Yields `(where, fields)` for every non-blank line of a whitespace-separated text file.

    Raises:
        StpnError: naming the file and line when a line does not have `num_fields` fields (`form` shows the
            expected layout, e.g. "video_name start end").
    """
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {lineno}"
        if len(fields) != num_fields:
            raise StpnError(f"{where}: expected '{form}', got {line.strip()!r}")
        yield where, fields


def _read_toolkit_txt(path: str) -> list[tuple[str, float, float]]:
    """Lines `video_name start end` -> [(name, start, end)] in file order."""
    out = []
    for where, fields in text_rows(path, 3, "video_name start end"):
        s, e = parse_interval(fields[1], fields[2], where)
        out.append((fields[0], s, e))
    return out


def read_thumos14_toolkit(
    folder: str, subset: str = "test", durations: Mapping[str, float] | None = None
) -> list[VideoRecord]:
    """Reads the THUMOS14 toolkit ground truth folder.

    Args:
      folder: Directory holding `<Class>_val.txt` / `<Class>_test.txt` and `Ambiguous_*.txt`.
      subset: "validation" (reads `*_val.txt`) or "test" (reads `*_test.txt`).
      durations: Optional video name -> seconds (e.g. from `read_thumos14_durations`).

    Returns:
      One record per video that appears in any class file or the Ambiguous file, sorted by video id.
      Segments are in class order (THUMOS14_CLASSES, then any extra class files alphabetically) and,
      within a class, in file order. Videos with only Ambiguous segments are kept with empty labels.

    Raises:
      StpnError: On a missing folder, no class files, or a malformed line.
    """
    if subset not in _TOOLKIT_SUFFIX:
        raise StpnError(f"{folder}: unknown THUMOS14 subset {subset!r}; expected 'validation' or 'test'")
    if not os.path.isdir(folder):
        raise StpnError(f"{folder}: ground-truth folder not found")
    suffix = f"_{_TOOLKIT_SUFFIX[subset]}.txt"
    found = sorted(n[: -len(suffix)] for n in os.listdir(folder) if n.endswith(suffix))
    classes = [c for c in THUMOS14_CLASSES if c in found]
    classes += [c for c in found if c not in THUMOS14_CLASSES and c != AMBIGUOUS]
    if not classes:
        raise StpnError(f"{folder}: no '<Class>{suffix}' ground-truth files for subset {subset!r}")

    segments: dict[str, list[Segment]] = {}
    for cls in classes:
        for name, s, e in _read_toolkit_txt(os.path.join(folder, cls + suffix)):
            segments.setdefault(name, []).append(Segment(s, e, cls))
    ambiguous: dict[str, list[tuple[float, float]]] = {}
    if AMBIGUOUS in found:
        for name, s, e in _read_toolkit_txt(os.path.join(folder, AMBIGUOUS + suffix)):
            ambiguous.setdefault(name, []).append((s, e))

    records = []
    for vid in sorted(set(segments) | set(ambiguous)):
        duration = None if durations is None else durations.get(vid)
        records.append(
            make_record(vid, subset, duration, segments.get(vid, ()), ambiguous.get(vid, ()))
        )
    return records


def _load_plain_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StpnError(f"{path}: file not found") from None
    except ValueError as e:
        raise StpnError(f"{path}: cannot load as a plain numpy array ({e})") from None


def _names(arr: np.ndarray, path: str) -> list[str]:
    if arr.ndim != 1:
        raise StpnError(f"{path}: expected a 1-D array of names, got shape {arr.shape}")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]


def read_thumos14_durations(folder: str) -> dict[str, float]:
    """Video name -> duration in seconds from Thumos14reduced `videoname.npy` + `duration.npy`."""
    vpath = os.path.join(folder, "videoname.npy")
    dpath = os.path.join(folder, "duration.npy")
    names = _names(_load_plain_npy(vpath), vpath)
    dur = _load_plain_npy(dpath)
    if dur.dtype.kind not in "fiu" or dur.size != len(names):
        raise StpnError(
            f"{dpath}: expected {len(names)} numeric durations (one per video in {vpath}), "
            f"got shape {dur.shape} dtype {dur.dtype}"
        )
    dur = dur.reshape(-1).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(dur) | (dur < 0))
    if bad.size:
        raise StpnError(f"{dpath}: entry {bad[0]} ({names[bad[0]]}) has invalid duration {dur[bad[0]]}")
    return dict(zip(names, dur.tolist()))


def read_thumos14_subsets(folder: str) -> dict[str, str]:
    """Video name -> subset ("validation"/"test") from `videoname.npy` + `subset.npy`."""
    vpath = os.path.join(folder, "videoname.npy")
    spath = os.path.join(folder, "subset.npy")
    names = _names(_load_plain_npy(vpath), vpath)
    subsets = _names(_load_plain_npy(spath), spath)
    if len(subsets) != len(names):
        raise StpnError(f"{spath}: has {len(subsets)} entries but {vpath} has {len(names)}")
    return dict(zip(names, subsets))


_PICKLE_REFUSAL = (
    "{path} is a numpy object array, which only pickle can load, and unpickling a file can run "
    "arbitrary code; if you trust the file, opt in with --allow_pickle (allow_pickle=True)"
)


def _load_object_npy(path: str, allow_pickle: bool) -> np.ndarray:
    if not allow_pickle:
        raise StpnError(_PICKLE_REFUSAL.format(path=path))
    try:
        return np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise StpnError(f"{path}: file not found") from None
    except Exception as e:  # unpickling can fail in many ways; report them all the same way
        raise StpnError(f"{path}: cannot load ({type(e).__name__}: {e})") from None


def read_thumos14_reduced(folder: str, allow_pickle: bool = False) -> list[VideoRecord]:
    """Reads the "Thumos14reduced" annotation arrays.

    Args:
      folder: Directory with videoname.npy, subset.npy, duration.npy, segments.npy, labels.npy and
        optionally Ambiguous_test.txt / Ambiguous_val.txt.
      allow_pickle: segments.npy and labels.npy are object arrays; loading them needs pickle, which can
        run code. Must be True to read them.

    Returns:
      Records in array order, subsets "validation" / "test", durations in seconds.

    Raises:
      StpnError: When allow_pickle is False, or on missing / inconsistent arrays.
    """
    spath = os.path.join(folder, "segments.npy")
    lpath = os.path.join(folder, "labels.npy")
    if not allow_pickle:
        raise StpnError(_PICKLE_REFUSAL.format(path=spath))
    subsets = read_thumos14_subsets(folder)
    durations = read_thumos14_durations(folder)
    names = list(subsets)
    segs = _load_object_npy(spath, allow_pickle)
    labs = _load_object_npy(lpath, allow_pickle)
    for arr, path in ((segs, spath), (labs, lpath)):
        if arr.shape != (len(names),):
            raise StpnError(f"{path}: expected {len(names)} entries (one per video), got shape {arr.shape}")

    ambiguous: dict[str, list[tuple[float, float]]] = {}
    for suffix in ("test", "val"):
        apath = os.path.join(folder, f"{AMBIGUOUS}_{suffix}.txt")
        if os.path.exists(apath):
            for name, s, e in _read_toolkit_txt(apath):
                ambiguous.setdefault(name, []).append((s, e))

    records = []
    for i, vid in enumerate(names):
        where = f"{spath}: entry {i} ({vid})"
        vsegs, vlabs = segs[i], labs[i]
        if len(vsegs) != len(vlabs):
            raise StpnError(f"{where}: {len(vsegs)} segments but {len(vlabs)} labels in {lpath}")
        out = []
        for j, (seg, lab) in enumerate(zip(vsegs, vlabs)):
            if len(seg) != 2:
                raise StpnError(f"{where}, segment {j}: expected [start, end], got {seg!r}")
            s, e = parse_interval(seg[0], seg[1], f"{where}, segment {j}")
            lab = lab.decode("utf-8") if isinstance(lab, bytes) else lab
            if not isinstance(lab, str) or not lab:
                raise StpnError(f"{lpath}: entry {i} ({vid}), segment {j}: label must be a string, got {lab!r}")
            out.append(Segment(s, e, lab))
        records.append(make_record(vid, subsets[vid], durations[vid], out, ambiguous.get(vid, ())))
    return records


def read_activitynet_json(path: str, subset: str | None = None) -> list[VideoRecord]:
    """Reads ActivityNet-layout ground truth (also BaS-Net's gt.json).

    Args:
      path: JSON file `{"database": {video_id: {"subset", "duration"?, "annotations": [{"segment":
        [s, e], "label"}], "ambiguous"?: [[s, e], ...]}}}`. Segment times may be numbers or numeric
        strings; "duration" may be absent (None).
      subset: Keep only videos of this subset; None keeps all.

    Returns:
      Records in file order.

    Raises:
      StpnError: On malformed JSON, missing fields, bad segments, or a subset no video has.
    """
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise StpnError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise StpnError(f"{path}: missing 'database' object (expected ActivityNet ground-truth layout)")
    records = []
    seen_subsets = set()
    for vid, entry in data["database"].items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise StpnError(f"{where}: expected an object, got {type(entry).__name__}")
        if "subset" not in entry:
            raise StpnError(f"{where}: missing field 'subset'")
        vsubset = entry["subset"]
        if not isinstance(vsubset, str):
            raise StpnError(f"{where}: 'subset' must be a string, got {vsubset!r}")
        seen_subsets.add(vsubset)
        if subset is not None and vsubset != subset:
            continue
        duration = entry.get("duration")
        if duration is not None:
            duration = _parse_time(duration, f"{where}, duration")
            if duration < 0:
                raise StpnError(f"{where}: negative duration {duration}")
        anns = entry.get("annotations")
        if not isinstance(anns, list):
            raise StpnError(f"{where}: missing or non-list field 'annotations'")
        segs = []
        for j, ann in enumerate(anns):
            awhere = f"{where}, annotation {j}"
            if not isinstance(ann, dict) or "segment" not in ann or "label" not in ann:
                raise StpnError(f"{awhere}: expected an object with 'segment' and 'label'")
            seg, label = ann["segment"], ann["label"]
            if not isinstance(seg, list) or len(seg) != 2:
                raise StpnError(f"{awhere}: 'segment' must be [start, end], got {seg!r}")
            if not isinstance(label, str) or not label:
                raise StpnError(f"{awhere}: 'label' must be a non-empty string, got {label!r}")
            s, e = parse_interval(seg[0], seg[1], awhere)
            segs.append(Segment(s, e, label))
        amb = entry.get("ambiguous", [])
        if not isinstance(amb, list):
            raise StpnError(f"{where}: 'ambiguous' must be a list of [start, end]")
        ambiguous = []
        for j, seg in enumerate(amb):
            if not isinstance(seg, list) or len(seg) != 2:
                raise StpnError(f"{where}, ambiguous {j}: expected [start, end], got {seg!r}")
            ambiguous.append(parse_interval(seg[0], seg[1], f"{where}, ambiguous {j}"))
        records.append(make_record(str(vid), vsubset, duration, segs, ambiguous))
    if subset is not None and not records:
        raise StpnError(
            f"{path}: no videos in subset {subset!r}; subsets present: {sorted(seen_subsets)}"
        )
    return records


def read_split_file(path: str) -> list[str]:
    """One video name per line; blank lines ignored."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def write_activitynet_json(records: Iterable[VideoRecord], path: str) -> None:
    """Writes records as ActivityNet-layout ground truth JSON, atomically.

    Layout: `{"version", "taxonomy": [], "database": {id: {"subset", "duration", "annotations":
    [{"segment": [s, e], "label"}], "ambiguous": [[s, e], ...]}}}`; `read_activitynet_json` reads it back.
    """
    database = {}
    for r in records:
        if r.video_id in database:
            raise StpnError(f"{path}: duplicate video id {r.video_id!r} in records to write")
        database[r.video_id] = {
            "subset": r.subset,
            "duration": r.duration,
            "annotations": [{"segment": [s.start, s.end], "label": s.label} for s in r.segments],
            "ambiguous": [[s, e] for s, e in r.ambiguous],
        }
    atomic_write_json(path, {"version": "VERSION 1.3", "taxonomy": [], "database": database})


def read_ucf101_ids(det_txt_path: str) -> dict[str, int]:
    """Class name -> UCF101 class id from the toolkit's `det.txt` (lines `id name`)."""
    out: dict[str, int] = {}
    for where, fields in text_rows(det_txt_path, 2, "id ClassName"):
        if not fields[0].isdigit():
            raise StpnError(f"{where}: expected 'id ClassName', got {' '.join(fields)!r}")
        if fields[1] in out:
            raise StpnError(f"{where}: class {fields[1]!r} listed twice")
        out[fields[1]] = int(fields[0])
    if not out:
        raise StpnError(f"{det_txt_path}: no class ids found")
    return out

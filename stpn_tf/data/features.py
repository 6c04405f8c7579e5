"""Readers for the public snippet-feature layouts, one video at a time.

Every reader answers `has(video_id)` and `read(video_id) -> VideoFeatures` and never loads more than one
video's features, except `JointNpyFeatures`: the Thumos14reduced release is a single pickled object
array, which numpy can only load whole (about 1.5 GB for the 412 THUMOS14 videos).

Layouts:
  * `JointNpyFeatures`: "Thumos14reduced" (W-TALC family) `Thumos14reduced-I3D-JOINTFeatures.npy`, an
    object array aligned with `videoname.npy`; entry i is [T_i, 2D] with RGB in the first D columns and
    flow in the last D. Frames at 25 fps, one feature per 16 frames, whatever `extracted_fps.npy` says.
    Loading it needs pickle (see `PICKLE_EXPLANATION`).
  * `PerVideoNpyFeatures`: `<root>/<split>/{rgb,flow}/<video>.npy`, each [T, D] (BaS-Net family, and
    what `stpn extract` writes), with optional `<root>/<split>/meta/<video>.json` holding any of
    "fps", "stride_frames", "num_frames", "num_snippets", "duration". When a split has a `meta` folder,
    a video without its meta file counts as absent (`stpn extract` writes it last).
  * `H5Features`: one HDF5 file keyed by video id (a "v_" prefix, common in ActivityNet releases, is
    also tried). Each key is a group with "rgb" and "flow" datasets [T, D], or a single dataset [T, 2D]
    split like the joint array. Optional attributes "fps", "stride_frames", "duration".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from stpn_tf.core.errors import StpnError

# I3D releases for THUMOS14 (Thumos14reduced, BaS-Net) and `stpn extract`: 16-frame stacks at 25 fps.
DEFAULT_FPS = 25.0
DEFAULT_STRIDE_FRAMES = 16

PICKLE_EXPLANATION = (
    "is a numpy object array, which only pickle can load, and unpickling a file can run arbitrary "
    "code; if you trust the file (e.g. the Thumos14reduced release from its authors), opt in with "
    "--allow_pickle (allow_pickle=True)")

# `stpn build-dataset --layout`: layout -> (dataset family, feature reader).
LAYOUTS: dict[str, tuple[str, str]] = {
    "thumos14_reduced": ("thumos14", "joint_npy"),
    "thumos14_npy": ("thumos14", "npy"),
    "thumos14_h5": ("thumos14", "h5"),
    "activitynet_h5": ("activitynet", "h5"),
    "activitynet_npy": ("activitynet", "npy"),
}

_META_KEYS = {"fps", "stride_frames", "num_frames", "num_snippets", "duration"}


@dataclasses.dataclass
class VideoFeatures:
    """Both streams of one video as stored (not yet checked or trimmed by the builder).

    Attributes:
      rgb: [L_rgb, D] features.
      flow: [L_flow, D] features.
      fps: Frame rate the snippets were computed at.
      stride_frames: Frames per snippet.
      duration: Seconds, when the source records it (per-video metadata), else None.
      where: Human-readable origin for error messages ("<file>" or "<file>[<key>]").
    """

    rgb: np.ndarray
    flow: np.ndarray
    fps: float
    stride_frames: int
    duration: float | None
    where: str


class FeatureSource(Protocol):
    """What the dataset builder needs from a feature layout."""

    def video_ids(self) -> list[str]: ...

    def has(self, video_id: str) -> bool: ...

    def read(self, video_id: str) -> VideoFeatures: ...

    def source_files(self, video_ids: Sequence[str]) -> list[str]: ...

    def close(self) -> None: ...


def _split_joint(joint: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """[T, 2D] -> ([T, D] RGB, [T, D] flow): RGB comes first in the joint releases."""
    if joint.ndim != 2 or joint.shape[1] % 2:
        raise StpnError(f"{where}: expected joint features [T, 2D] (RGB then flow), got shape {joint.shape}")
    half = joint.shape[1] // 2
    return joint[:, :half], joint[:, half:]


def _as_float_array(value: Any, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise StpnError(f"{where}: expected numeric features, got dtype {arr.dtype}")
    return arr


class JointNpyFeatures:
    """The Thumos14reduced joint object array (see module docstring).

    Args:
      path: the `.npy` object array, entry i = [T_i, 2D] float.
      video_names: names aligned with the array entries (`videoname.npy`).
      allow_pickle: must be True; pickle can run code, so the caller opts in explicitly.
      fps, stride_frames: snippet timing (25 fps / 16 frames for the THUMOS14 release).
    """

    def __init__(self, path: str, video_names: Sequence[str], *, allow_pickle: bool = False,
                 fps: float = DEFAULT_FPS, stride_frames: int = DEFAULT_STRIDE_FRAMES):
        if not os.path.isfile(path):
            raise StpnError(f"{path}: feature file not found")
        if not allow_pickle:
            raise StpnError(f"{path} {PICKLE_EXPLANATION}")
        try:
            arr = np.load(path, allow_pickle=True)
        except Exception as e:  # a truncated pickle fails in many ways; all mean "unreadable file"
            raise StpnError(f"{path}: cannot load ({type(e).__name__}: {e})") from None
        if arr.ndim != 1 or arr.shape[0] != len(video_names):
            raise StpnError(f"{path}: expected {len(video_names)} entries aligned with videoname.npy, "
                            f"got shape {arr.shape}")
        index: dict[str, int] = {}
        for i, name in enumerate(video_names):
            if name in index:
                raise StpnError(f"{path}: duplicate video id {name!r} in videoname.npy (entries "
                                f"{index[name]} and {i})")
            index[name] = i
        self.path = path
        self._array = arr
        self._index = index
        self.fps = float(fps)
        self.stride_frames = int(stride_frames)

    def video_ids(self) -> list[str]:
        return list(self._index)

    def has(self, video_id: str) -> bool:
        return video_id in self._index

    def read(self, video_id: str) -> VideoFeatures:
        i = self._index[video_id]
        where = f"{self.path}[{i}] ({video_id})"
        rgb, flow = _split_joint(_as_float_array(self._array[i], where), where)
        return VideoFeatures(rgb, flow, self.fps, self.stride_frames, None, where)

    def source_files(self, video_ids: Sequence[str]) -> list[str]:
        return [self.path]

    def close(self) -> None:
        self._array = None


def _read_meta(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise StpnError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise StpnError(f"{path}: not UTF-8 text ({e.reason})") from None
    if not isinstance(meta, dict):
        raise StpnError(f"{path}: expected a JSON object with keys among {sorted(_META_KEYS)}")
    for key in _META_KEYS & set(meta):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise StpnError(f"{path}: {key!r} must be a non-negative number, got {value!r}")
    for key in ("fps", "stride_frames"):
        if key in meta and meta[key] <= 0:
            raise StpnError(f"{path}: {key!r} must be > 0, got {meta[key]!r}")
    return meta


def _load_npy(path: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise StpnError(f"{path}: per-video features must be plain numeric arrays; this file "
                            f"{PICKLE_EXPLANATION.split(';')[0]}") from None
        raise StpnError(f"{path}: cannot load as a numpy array ({e})") from None
    except (OSError, EOFError) as e:
        raise StpnError(f"{path}: cannot load as a numpy array ({e})") from None
    return _as_float_array(arr, path)


class PerVideoNpyFeatures:
    """Per-video npy folders `<root>/<split>/{rgb,flow}/<video>.npy` (see module docstring).

    Every subfolder of `root` holding an `rgb` or `flow` folder is a split folder; a video found in two
    split folders is a duplicate id and an error.

    Args:
      root: the features folder (e.g. BaS-Net's `features/`).
      fps, stride_frames: timing used when a video has no `meta/<video>.json`.
    """

    def __init__(self, root: str, *, fps: float = DEFAULT_FPS, stride_frames: int = DEFAULT_STRIDE_FRAMES):
        if not os.path.isdir(root):
            raise StpnError(f"{root}: features folder not found")
        self.root = root
        self.fps = float(fps)
        self.stride_frames = int(stride_frames)
        self._where: dict[str, str] = {}  # video id -> split folder
        self.unfinished: list[str] = []  # videos with features but no meta json (extraction cut short)
        split_dirs = sorted(d for d in os.listdir(root)
                            if os.path.isdir(os.path.join(root, d, "rgb"))
                            or os.path.isdir(os.path.join(root, d, "flow")))
        if not split_dirs:
            raise StpnError(f"{root}: no '<split>/rgb' or '<split>/flow' folders (expected "
                            f"{root}/<split>/{{rgb,flow}}/<video>.npy)")
        for split in split_dirs:
            names: set[str] = set()
            for stream in ("rgb", "flow"):
                folder = os.path.join(root, split, stream)
                if os.path.isdir(folder):
                    names |= {n[:-4] for n in os.listdir(folder) if n.endswith(".npy")}
            meta_dir = os.path.join(root, split, "meta")
            if os.path.isdir(meta_dir):
                # `stpn extract` writes meta/<video>.json last: without it the video is unfinished.
                finished = {n[:-5] for n in os.listdir(meta_dir) if n.endswith(".json")}
                self.unfinished += sorted(names - finished)
                names &= finished
            for name in sorted(names):
                if name in self._where:
                    raise StpnError(f"{root}: duplicate video id {name!r} in split folders "
                                    f"{self._where[name]!r} and {split!r}")
                self._where[name] = split

    def video_ids(self) -> list[str]:
        return list(self._where)

    def has(self, video_id: str) -> bool:
        return video_id in self._where

    def _path(self, video_id: str, kind: str) -> str:
        ext = ".json" if kind == "meta" else ".npy"
        return os.path.join(self.root, self._where[video_id], kind, video_id + ext)

    def read(self, video_id: str) -> VideoFeatures:
        arrays = {}
        for stream in ("rgb", "flow"):
            path = self._path(video_id, stream)
            if not os.path.isfile(path):
                raise StpnError(f"{path}: missing {stream} features for video {video_id} "
                                f"(the other stream exists)")
            arrays[stream] = _load_npy(path)
        fps, stride, duration = self.fps, self.stride_frames, None
        meta_path = self._path(video_id, "meta")
        if os.path.isfile(meta_path):
            meta = _read_meta(meta_path)
            fps = float(meta.get("fps", fps))
            stride = int(meta.get("stride_frames", stride))
            duration = float(meta["duration"]) if "duration" in meta else None
            if "num_snippets" in meta and int(meta["num_snippets"]) != arrays["rgb"].shape[0]:
                raise StpnError(f"{meta_path}: num_snippets {meta['num_snippets']} but "
                                f"{self._path(video_id, 'rgb')} has {arrays['rgb'].shape[0]} rows")
        where = os.path.join(self.root, self._where[video_id], "{rgb,flow}", video_id + ".npy")
        return VideoFeatures(arrays["rgb"], arrays["flow"], fps, stride, duration, where)

    def source_files(self, video_ids: Sequence[str]) -> list[str]:
        out = []
        for vid in video_ids:
            for kind in ("rgb", "flow", "meta"):
                path = self._path(vid, kind)
                if os.path.isfile(path):
                    out.append(path)
        return out

    def close(self) -> None:
        pass


class H5Features:
    """HDF5 features keyed by video id (see module docstring)."""

    def __init__(self, path: str, *, fps: float = DEFAULT_FPS, stride_frames: int = DEFAULT_STRIDE_FRAMES):
        import h5py  # only this reader needs it

        if not os.path.isfile(path):
            raise StpnError(f"{path}: feature file not found")
        try:
            self._file = h5py.File(path, "r")
        except OSError as e:
            raise StpnError(f"{path}: cannot open as HDF5 ({e})") from None
        self.path = path
        self.fps = float(fps)
        self.stride_frames = int(stride_frames)
        self._keys = set(self._file.keys())
        self._h5py = h5py

    def _key(self, video_id: str) -> str | None:
        for key in (video_id, "v_" + video_id):
            if key in self._keys:
                return key
        return None

    def video_ids(self) -> list[str]:
        return sorted(self._keys)

    def has(self, video_id: str) -> bool:
        return self._key(video_id) is not None

    def _attr(self, node, name, default):
        value = node.attrs.get(name, default)
        return default if value is None else value

    def read(self, video_id: str) -> VideoFeatures:
        key = self._key(video_id)
        where = f"{self.path}[{key}]"
        node = self._file[key]
        try:
            if isinstance(node, self._h5py.Group):
                missing = [s for s in ("rgb", "flow") if s not in node]
                if missing:
                    raise StpnError(f"{where}: group lacks dataset(s) {missing}; expected 'rgb' and 'flow'")
                rgb = _as_float_array(node["rgb"][()], f"{where}/rgb")
                flow = _as_float_array(node["flow"][()], f"{where}/flow")
            else:
                rgb, flow = _split_joint(_as_float_array(node[()], where), where)
        except OSError as e:  # h5py reports damaged chunks as OSError
            raise StpnError(f"{where}: cannot read ({e})") from None
        fps = float(self._attr(node, "fps", self.fps))
        stride = int(self._attr(node, "stride_frames", self.stride_frames))
        duration = node.attrs.get("duration")
        return VideoFeatures(rgb, flow, fps, stride, None if duration is None else float(duration), where)

    def source_files(self, video_ids: Sequence[str]) -> list[str]:
        return [self.path]

    def close(self) -> None:
        self._file.close()

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
    a video without its meta file counts as absent (`stpn extract` writes it last). The folder's reader
    is stpn_tf.artifacts.feature_dir, which owns that layout.
  * `H5Features`: one HDF5 file keyed by video id (a "v_" prefix, common in ActivityNet releases, is
    also tried). Each key is a group with "rgb" and "flow" datasets [T, D], or a single dataset [T, 2D]
    split like the joint array. Optional attributes "fps", "stride_frames", "duration".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from stpn_tf.artifacts.feature_dir import (OBJECT_ARRAY_RISK, VideoFeatures, list_videos, numeric_array, read_video,
                                           video_paths)
from stpn_tf.core.errors import StpnError

# I3D releases for THUMOS14 (Thumos14reduced, BaS-Net) and `stpn extract`: 16-frame stacks at 25 fps.
DEFAULT_FPS = 25.0
DEFAULT_STRIDE_FRAMES = 16

PICKLE_EXPLANATION = (
    f"{OBJECT_ARRAY_RISK}; if you trust the file (e.g. the Thumos14reduced release from its authors), opt in "
    "with --allow_pickle (allow_pickle=True)")

# `stpn build-dataset --layout`: layout -> (dataset family, feature reader).
LAYOUTS: dict[str, tuple[str, str]] = {
    "thumos14_reduced": ("thumos14", "joint_npy"),
    "thumos14_npy": ("thumos14", "npy"),
    "thumos14_h5": ("thumos14", "h5"),
    "activitynet_h5": ("activitynet", "h5"),
    "activitynet_npy": ("activitynet", "npy"),
}


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
        rgb, flow = _split_joint(numeric_array(self._array[i], where), where)
        return VideoFeatures(video_id=video_id, rgb=rgb, flow=flow, fps=self.fps, stride_frames=self.stride_frames,
                             where=where)

    def source_files(self, video_ids: Sequence[str]) -> list[str]:
        return [self.path]

    def close(self) -> None:
        self._array = None


class PerVideoNpyFeatures:
    """Per-video npy folders `<root>/<split>/{rgb,flow}/<video>.npy` (see module docstring).

    Every subfolder of `root` holding an `rgb` or `flow` folder is a split folder; a video found in two
    split folders is a duplicate id and an error.

    Args:
      root: the features folder (e.g. BaS-Net's `features/`).
      fps, stride_frames: timing used when a video has no `meta/<video>.json`.
    """

    def __init__(self, root: str, *, fps: float = DEFAULT_FPS, stride_frames: int = DEFAULT_STRIDE_FRAMES):
        self.root = root
        self.fps = float(fps)
        self.stride_frames = int(stride_frames)
        # video id -> split folder; videos with features but no meta json (extraction cut short).
        self._where, self.unfinished = list_videos(root)

    def video_ids(self) -> list[str]:
        return list(self._where)

    def has(self, video_id: str) -> bool:
        return video_id in self._where

    def read(self, video_id: str) -> VideoFeatures:
        return read_video(self.root, self._where[video_id], video_id, fps=self.fps, stride_frames=self.stride_frames)

    def source_files(self, video_ids: Sequence[str]) -> list[str]:
        out = []
        for vid in video_ids:
            paths = video_paths(self.root, self._where[vid], vid)
            out += [paths[kind] for kind in ("rgb", "flow", "meta") if os.path.isfile(paths[kind])]
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
                rgb = numeric_array(node["rgb"][()], f"{where}/rgb")
                flow = numeric_array(node["flow"][()], f"{where}/flow")
            else:
                rgb, flow = _split_joint(numeric_array(node[()], where), where)
        except OSError as e:  # h5py reports damaged chunks as OSError
            raise StpnError(f"{where}: cannot read ({e})") from None
        fps = float(self._attr(node, "fps", self.fps))
        stride = int(self._attr(node, "stride_frames", self.stride_frames))
        duration = node.attrs.get("duration")
        return VideoFeatures(video_id=video_id, rgb=rgb, flow=flow, fps=fps, stride_frames=stride,
                             duration=None if duration is None else float(duration), where=where)

    def source_files(self, video_ids: Sequence[str]) -> list[str]:
        return [self.path]

    def close(self) -> None:
        self._file.close()

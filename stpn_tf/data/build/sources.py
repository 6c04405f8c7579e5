"""Build-dataset phase 2: the feature reader of a layout, and the source hashes recorded in dataset.json."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from absl import logging

from stpn_tf.data import features as feat
from stpn_tf.data.build.select import video_names

THUMOS14_JOINT_FEATURES = "Thumos14reduced-I3D-JOINTFeatures.npy"


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str) -> dict[str, Any]:
    """Path, size and sha256 of a source file, as recorded in dataset.json."""
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": sha256(path)}


def folder_entry(root: str, files: Sequence[str]) -> dict[str, Any]:
    """One entry for many per-video files: the hash covers each file's relative path and sha256."""
    digest = hashlib.sha256()
    total = 0
    for path in sorted(files):
        digest.update(f"{os.path.relpath(path, root)} {sha256(path)}\n".encode())
        total += os.path.getsize(path)
    return {"path": os.path.abspath(root), "bytes": total, "sha256": digest.hexdigest(),
            "files": len(files)}


def open_feature_source(*, reader: str, features: str, annotations: str, fps: float | None,
                        stride_frames: int | None, allow_pickle: bool) -> feat.FeatureSource:
    """The feature reader of a layout ("joint_npy", "npy" or "h5"); timing defaults 25 fps / 16 frames."""
    timing = {"fps": fps or feat.DEFAULT_FPS, "stride_frames": stride_frames or feat.DEFAULT_STRIDE_FRAMES}
    if reader == "joint_npy":
        if os.path.isdir(features):
            features = os.path.join(features, THUMOS14_JOINT_FEATURES)
        if os.path.isfile(os.path.join(annotations, "extracted_fps.npy")):
            logging.info("%s says 10 fps; the Thumos14reduced features are 25 fps / 16-frame snippets "
                         "(spec section 5), which is what is used", os.path.join(annotations, "extracted_fps.npy"))
        return feat.JointNpyFeatures(features, video_names(annotations), allow_pickle=allow_pickle, **timing)
    if reader == "npy":
        return feat.PerVideoNpyFeatures(features, **timing)
    return feat.H5Features(features, **timing)


def source_entries(*, annotation_files: Sequence[str], durations: str | None, classes: str | None, features: str,
                   source: feat.FeatureSource, reader: str, custom_source: bool,
                   built_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Path, size and sha256 of every input of a build, for dataset.json."""
    entries = [file_entry(p) for p in annotation_files]
    if durations:
        entries += [file_entry(os.path.join(durations, n)) for n in ("videoname.npy", "duration.npy")]
    if custom_source:
        entries += [file_entry(p) for p in source.source_files(built_ids) if os.path.isfile(p)]
    elif reader == "npy":
        entries.append(folder_entry(features, source.source_files(built_ids)))
    else:
        entries.append(file_entry(getattr(source, "path", features)))
    if classes:
        entries.append(file_entry(classes))
    return entries

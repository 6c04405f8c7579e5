"""The per-video detections of an unfinished batch localization, kept to resume it.

    <output>.parts/<video>.json   {"model": fingerprint, "inputs": input state, "video_id", "detections"}
                                  or {"model", "inputs", "error": one-line message} for a bad video

One part per video of the per-video feature folder (stpn_tf.artifacts.feature_dir), written atomically
when the video is done. A part is valid only while what decides its detections is unchanged: the model
files and the batching (`model_fingerprint`) and the video's feature files (`input_state`: sizes and
modification times). The parts are removed once the detections JSON holding every video is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from stpn_tf.artifacts import feature_dir
from stpn_tf.core.atomic import atomic_write_json, remove_quietly, remove_temporaries


def default_parts_dir(output: str) -> str:
    """Where the parts of a run writing `output` go unless told otherwise."""
    return f"{output}.parts"


def open_parts_dir(parts_dir: str) -> str:
    """Creates `parts_dir` if needed and removes the temporaries of parts a killed run was writing."""
    os.makedirs(parts_dir, exist_ok=True)
    remove_temporaries(parts_dir)
    return parts_dir


def remove_parts_dir(parts_dir: str) -> None:
    """Removes the parts once the output holds every finished video."""
    remove_quietly(parts_dir)


def _file_state(path: str) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def input_state(meta_path: str) -> dict[str, Any]:
    """Size and modification time of a video's meta and npy files: a part is stale when they change."""
    paths = feature_dir.video_paths(*feature_dir.locate(meta_path))
    return {"meta": _file_state(meta_path), **{s: _file_state(paths[s]) for s in feature_dir.STREAMS}}


def model_fingerprint(export_dir: str, batch_size: int) -> str:
    """sha256 of what decides a video's detections besides its features: the model files and the batching.

    Covers the relative path, size and modification time of every (non-hidden) file under `export_dir`,
    and `batch_size` (it decides which videos share a padded call).
    """
    digest = hashlib.sha256(f"batch_size={batch_size}\n".encode())
    for root, dirs, files in os.walk(export_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = os.path.join(root, name)
            digest.update(f"{os.path.relpath(path, export_dir)} {_file_state(path)}\n".encode())
    return digest.hexdigest()


def part_path(parts_dir: str, meta_path: str) -> str:
    return os.path.join(parts_dir, os.path.basename(meta_path))


def read_part(parts_dir: str, meta_path: str, fingerprint: str) -> dict[str, Any] | None:
    """A finished video's part {"video_id", "detections"} or {"error"}, or None if missing or stale."""
    try:
        with open(part_path(parts_dir, meta_path)) as handle:
            part = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(part, dict) or part.get("model") != fingerprint or part.get("inputs") != input_state(meta_path):
        return None
    if isinstance(part.get("error"), str):
        return part
    if isinstance(part.get("video_id"), str) and isinstance(part.get("detections"), list):
        return part
    return None


def write_part(parts_dir: str, meta_path: str, fingerprint: str, inputs: Mapping[str, Any], **body: Any) -> None:
    """Writes one video's part atomically; `body` is {"video_id", "detections"} or {"error"}."""
    atomic_write_json(part_path(parts_dir, meta_path), {"model": fingerprint, "inputs": dict(inputs), **body},
                      indent=None, make_parents=True)

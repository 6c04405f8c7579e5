"""Raw outputs on disk: the streams' attention, T-CAM and video probabilities of a split, saved once so that
localization can run again with other settings without the models (`stpn localize --save_raw`, `--raw`).

An uncompressed `.npz` without pickle (strings are unicode arrays), keys with "/" stored as "__": per stream
s in rgb, flow, joint `s/attention` [N, T], `s/tcam` [N, T, C], `s/probabilities` [N, C]; per video
`video_id`, `length` (valid positions of T), `num_snippets`, `seconds_per_snippet`, `duration`; `classes`
[C]; optionally the `split` and the `ground_truth` file they are of. Pure numpy, no TensorFlow.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import numpy as np

from stpn_tf.core.atomic import atomic_write_bytes
from stpn_tf.core.errors import StpnError
from stpn_tf.core.streams import SINGLE_STREAMS, stream_roles

#: The per-stream arrays of raw outputs.
RAW_STREAM_KEYS = ("attention", "tcam", "probabilities")


def raw_streams(raw: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The streams whose outputs `raw` holds, in rgb, flow, joint order."""
    return tuple(s for s in SINGLE_STREAMS if f"{s}/attention" in raw)


def save_raw(path: str, raw: Mapping[str, np.ndarray], *, split: str | None = None,
             ground_truth: str | None = None) -> None:
    """Writes raw outputs as an uncompressed `.npz` atomically (no pickle: strings are unicode arrays).

    Args:
      split: The split the outputs are of, recorded as "split" (the default subset of a sweep over them).
      ground_truth: Its ground truth file, recorded as "ground_truth" (relative to the file's directory when
        it lies inside it, so a work directory can be moved with its dataset).
    """
    raw = dict(raw)
    if split is not None:
        raw["split"] = np.asarray(str(split))
    if ground_truth is not None:
        base = os.path.dirname(os.path.abspath(path))
        inside = os.path.abspath(ground_truth).startswith(base + os.sep)
        raw["ground_truth"] = np.asarray(os.path.relpath(ground_truth, base) if inside
                                         else os.path.abspath(ground_truth))
    buffer = io.BytesIO()
    np.savez(buffer, **{k.replace("/", "__"): np.asarray(v) for k, v in raw.items()})
    atomic_write_bytes(path, buffer.getvalue(), make_parents=True)


def raw_source(raw: Mapping[str, np.ndarray], path: str) -> tuple[str | None, str | None]:
    """(split, ground truth file) recorded in raw outputs read from `path`; None for what is not recorded."""
    split = str(raw["split"]) if "split" in raw else None
    ground_truth = str(raw["ground_truth"]) if "ground_truth" in raw else None
    if ground_truth is not None and not os.path.isabs(ground_truth):
        ground_truth = os.path.join(os.path.dirname(os.path.abspath(path)), ground_truth)
    return split, ground_truth


def load_raw(path: str) -> dict[str, np.ndarray]:
    """Reads raw outputs written by `save_raw`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k.replace("__", "/"): data[k] for k in data.files}
    except FileNotFoundError:
        raise StpnError(f"{path}: raw outputs not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise StpnError(f"{path}: not a raw-outputs file written by `stpn localize --save_raw` ({e})") from None
    missing = [k for k in ("video_id", "length", "num_snippets", "seconds_per_snippet", "duration", "classes")
               if k not in raw]
    if missing or not raw_streams(raw):
        raise StpnError(f"{path}: not a raw-outputs file written by `stpn localize --save_raw` (missing "
                        f"{', '.join(missing) or 'stream outputs'})")
    return raw


def check_raw_streams(raw: Mapping[str, np.ndarray], streams: Sequence[str]) -> None:
    """Raises unless `raw` holds every stream that `streams` localizes with."""
    for stream in set(stream_roles(streams)):
        if f"{stream}/attention" not in raw:
            raise StpnError(f"the raw outputs hold no {stream} stream (they have {', '.join(raw_streams(raw))})")


def passing_videos(raw: Mapping[str, np.ndarray], *, streams: Sequence[str] = ("rgb", "flow"),
                   class_threshold: float) -> np.ndarray:
    """Indices of the videos of `raw` where some class passes `class_threshold` in a stream of `streams`
    (compared in float64 as the Localizer compares): the only videos that can have detections."""
    passing = np.zeros(np.shape(raw["video_id"]) + np.shape(raw["classes"]), bool)
    for stream in set(stream_roles(streams)):
        passing |= np.asarray(raw[f"{stream}/probabilities"], np.float32).astype(np.float64) >= class_threshold
    return np.flatnonzero(passing.any(axis=1))


def check_single_stream_nms(streams: Sequence[str], *, nms: str, nms_threshold: float) -> None:
    """One stream plays both roles of eq. 7, so every proposal comes twice; hard NMS (tIoU 1 > threshold) is
    what removes the copy: refuse a threshold that would keep both."""
    first, second = stream_roles(streams)
    if first == second and nms_threshold >= 1.0 and nms == "hard":
        raise StpnError("single-stream localization needs nms_threshold < 1")

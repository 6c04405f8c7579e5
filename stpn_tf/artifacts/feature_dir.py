"""The per-video feature folder: what `stpn extract` writes and `build-dataset` and Beam read.

    <root>/<split>/rgb/<video>.npy    float32 [L, D]
    <root>/<split>/flow/<video>.npy   float32 [L, D]
    <root>/<split>/meta/<video>.json  {"video_id", "fps", "stride_frames", "num_frames", "num_snippets",
                                       "duration"[, "streams"][, "fingerprint"]}

"streams" is written only for an RGB-only extraction (["rgb"]: no flow file). "fingerprint" says what made
the features (I3D model and weights identity, fps, stride, crop, TV-L1 options; stpn_tf.extract.pipeline
builds it); `reuse_check` is the one rule by which `stpn extract`, `stpn localize VIDEO` and Beam decide
to reuse a video on a rerun. Every file is written atomically and the meta file last, so its presence
marks a finished video (in a split with a `meta` folder, a video without its meta file is unfinished). The same
folders without meta files are the BaS-Net family's releases, which `read_video` takes with a timing
given by the caller. `VideoFeatures` is also what the other feature layouts give
(stpn_tf.data.features).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from typing import Any

import numpy as np

from stpn_tf.core.atomic import atomic_output, atomic_write_json, remove_temporaries
from stpn_tf.core.errors import StpnError

STREAMS = ("rgb", "flow")
META = "meta"
# The keys of a meta file as `stpn extract` writes them, in its order.
META_KEYS = ("video_id", "fps", "stride_frames", "num_frames", "num_snippets", "duration")
FINGERPRINT = "fingerprint"  # optional meta key: what made the features (see reuse_check)
_NUMBER_KEYS = frozenset(META_KEYS[1:])

# Why a pickled (object) array is refused; stpn_tf.data.features says how to opt in for the joint release.
OBJECT_ARRAY_RISK = ("is a numpy object array, which only pickle can load, and unpickling a file can run "
                     "arbitrary code")


@dataclasses.dataclass
class VideoFeatures:
    """Both streams of one video and their timing, as extracted or as read from a feature layout.

    Attributes:
      video_id: Video name (for extraction: the file name without extension).
      rgb: [L_rgb, D] RGB-stream features, one per non-overlapping stack of `stride_frames` frames.
      flow: [L_flow, D] optical-flow features (a release's lengths may differ by a few snippets; what
        `stpn extract` writes has L_rgb == L_flow); None for an RGB-only extraction (`--streams=rgb`).
      fps: Frame rate the snippets were computed at.
      stride_frames: Frames per snippet.
      duration: Seconds of the source video, when known (extraction: decoded frames / native fps).
      num_frames: Frames after resampling (including the trailing frames that fill no stack), when known.
      where: Human-readable origin for error messages ("<file>" or "<file>[<key>]").
      fingerprint: What made the features (JSON values; see reuse_check), None when not recorded.
    """

    video_id: str
    rgb: np.ndarray
    flow: np.ndarray | None
    fps: float
    stride_frames: int
    duration: float | None = None
    num_frames: int | None = None
    where: str = ""
    fingerprint: dict[str, Any] | None = None

    @property
    def num_snippets(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams held: ("rgb", "flow"), or ("rgb",) for an RGB-only extraction."""
        return STREAMS if self.flow is not None else ("rgb",)

    def meta(self) -> dict[str, Any]:
        """The meta file's content (needs `duration` and `num_frames`)."""
        meta = {
            "video_id": self.video_id,
            "fps": float(self.fps),
            "stride_frames": int(self.stride_frames),
            "num_frames": int(self.num_frames),
            "num_snippets": self.num_snippets,
            "duration": float(self.duration),
        }
        if self.flow is None:
            meta["streams"] = ["rgb"]
        if self.fingerprint is not None:
            meta[FINGERPRINT] = self.fingerprint
        return meta


def video_paths(root: str, split: str, video_id: str) -> dict[str, str]:
    """{"rgb", "flow", "meta"}: the three files of one video."""
    return {
        "rgb": os.path.join(root, split, "rgb", f"{video_id}.npy"),
        "flow": os.path.join(root, split, "flow", f"{video_id}.npy"),
        "meta": os.path.join(root, split, META, f"{video_id}.json"),
    }


def locate(meta_path: str) -> tuple[str, str, str]:
    """(root, split, video_id) of a video's meta file path."""
    split_dir = os.path.dirname(os.path.dirname(meta_path))
    video_id = os.path.splitext(os.path.basename(meta_path))[0]
    return os.path.dirname(split_dir), os.path.basename(split_dir), video_id


def meta_files(root: str, split: str) -> list[str]:
    """The meta files of a split's complete videos, sorted (hidden temporaries are not listed)."""
    return sorted(glob.glob(os.path.join(root, split, META, "*.json")))


def write_video(root: str, split: str, features: VideoFeatures) -> dict[str, str]:
    """Writes one video's npy pair and meta JSON atomically (meta last). Returns the paths."""
    paths = video_paths(root, split, features.video_id)
    for stream in features.streams:
        with atomic_output(paths[stream], make_parents=True) as temporary:
            np.save(temporary, getattr(features, stream))
    atomic_write_json(paths["meta"], features.meta(), make_parents=True)
    return paths


def remove_stale_temporaries(root: str, split: str) -> None:
    """Deletes the hidden temporaries a killed writer left in a split's folders (its videos stay unfinished)."""
    for kind in (*STREAMS, META):
        remove_temporaries(os.path.join(root, split, kind))


def numeric_array(value: Any, where: str) -> np.ndarray:
    """`value` as an array; StpnError naming `where` unless it holds numbers."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise StpnError(f"{where}: expected numeric features, got dtype {arr.dtype}")
    return arr


def load_stream(path: str) -> np.ndarray:
    """One stream's npy file (numeric, never unpickled)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise StpnError(f"{path}: per-video features must be plain numeric arrays; this file "
                            f"{OBJECT_ARRAY_RISK}") from None
        raise StpnError(f"{path}: cannot load as a numpy array ({e})") from None
    except (OSError, EOFError) as e:
        raise StpnError(f"{path}: cannot load as a numpy array ({e})") from None
    return numeric_array(arr, path)


def read_meta(path: str) -> dict[str, Any]:
    """A meta file, checked: a JSON object whose numbers are finite and >= 0, fps and stride > 0.

    Any subset of META_KEYS may be present (hand-made meta files of other releases); "video_id" must be
    a string.
    """
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise StpnError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise StpnError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise StpnError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(meta, dict):
        raise StpnError(f"{path}: expected a JSON object with keys among {sorted(_NUMBER_KEYS)}")
    for key in _NUMBER_KEYS & set(meta):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise StpnError(f"{path}: {key!r} must be a non-negative number, got {value!r}")
    for key in ("fps", "stride_frames"):
        if key in meta and meta[key] <= 0:
            raise StpnError(f"{path}: {key!r} must be > 0, got {meta[key]!r}")
    if "video_id" in meta and not isinstance(meta["video_id"], str):
        raise StpnError(f"{path}: 'video_id' must be a string, got {meta['video_id']!r}")
    streams = meta.get("streams", list(STREAMS))
    if not isinstance(streams, list) or "rgb" not in streams or not set(streams) <= set(STREAMS) \
            or len(set(streams)) != len(streams):
        raise StpnError(f"{path}: 'streams' must be [\"rgb\"] or [\"rgb\", \"flow\"], got {streams!r}")
    if FINGERPRINT in meta and not isinstance(meta[FINGERPRINT], dict):
        raise StpnError(f"{path}: {FINGERPRINT!r} must be a JSON object, got {meta[FINGERPRINT]!r}")
    return meta


def read_video(root: str, split: str, video_id: str, *, fps: float | None = None,
               stride_frames: int | None = None, complete: bool = False,
               feature_dim: int | None = None, streams: tuple[str, ...] = STREAMS) -> VideoFeatures:
    """Reads one video of the folder.

    Args:
      root, split, video_id: Which video (`video_paths`).
      fps, stride_frames: Timing of a video without a meta file, or whose meta file lacks it (BaS-Net
        folders); None: the meta file is required and must hold the timing.
      complete: Also require what `stpn extract` writes (a finished video for Beam to reuse or
        localize): a meta file with every key, both streams float32 [num_snippets, D] of one shape with
        num_snippets, D >= 1, and finite values.
      feature_dim: With `complete`, the D the caller's model expects.
      streams: The streams the caller needs: ("rgb", "flow"), or ("rgb",) (then `flow` is None).

    Returns:
      The video's VideoFeatures (arrays as stored; without `complete`, not yet checked for shape).

    Raises:
      StpnError: a missing or malformed meta file (when required), a meta file naming another video or
        a num_snippets that a stream disagrees with, a missing stream, a file that is not a numeric npy
        array, and with `complete` any of the conditions above.
    """
    paths = video_paths(root, split, video_id)
    meta_path = paths["meta"]
    timing_given = fps is not None and stride_frames is not None
    has_meta = complete or not timing_given or os.path.isfile(meta_path)
    meta = read_meta(meta_path) if has_meta else {}
    required = META_KEYS if complete else () if timing_given else ("fps", "stride_frames")
    missing = [k for k in required if k not in meta]
    if missing:
        raise StpnError(f"{meta_path}: lacks {', '.join(missing)} (not a finished `stpn extract` meta file)")
    if "video_id" in meta and meta["video_id"] != video_id:
        raise StpnError(f"{meta_path}: names video {meta['video_id']!r}, not {video_id!r}")
    stored = meta.get("streams", STREAMS)
    if "flow" in streams and "flow" not in stored:
        raise StpnError(f"{meta_path}: extracted with --streams=rgb (no flow features); extract the video again "
                        "with both streams for a two-stream use")
    arrays = {}
    for stream in streams:
        path = paths[stream]
        if not os.path.exists(path):
            origin = f"listed by {meta_path}" if has_meta else "the other stream exists"
            raise StpnError(f"{path}: missing {stream} features for video {video_id} ({origin})")
        arrays[stream] = load_stream(path)
        if "num_snippets" in meta:
            rows = arrays[stream].shape[0] if arrays[stream].ndim else 0
            if rows != int(meta["num_snippets"]):
                raise StpnError(f"{meta_path}: num_snippets {meta['num_snippets']} but {path} has {rows} rows")
    if complete:
        _check_complete(arrays, paths, video_id, int(meta["num_snippets"]), feature_dim)
    return VideoFeatures(
        video_id=video_id, rgb=arrays["rgb"], flow=arrays.get("flow"), fps=float(meta.get("fps", fps)),
        stride_frames=int(meta.get("stride_frames", stride_frames)),
        duration=float(meta["duration"]) if "duration" in meta else None,
        num_frames=int(meta["num_frames"]) if "num_frames" in meta else None,
        where=os.path.join(root, split, "{rgb,flow}", video_id + ".npy"), fingerprint=meta.get(FINGERPRINT))


def _check_complete(arrays: dict[str, np.ndarray], paths: dict[str, str], video_id: str, num_snippets: int,
                    feature_dim: int | None) -> None:
    for stream, array in arrays.items():
        path = paths[stream]
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise StpnError(f"{path}: shape {list(array.shape)}, expected [{num_snippets}, D] as its meta says"
                            + (" (an empty video)" if num_snippets == 0 else ""))
        if array.dtype != np.float32:
            raise StpnError(f"{path}: dtype {array.dtype}, expected float32 (as `stpn extract` writes)")
        if feature_dim is not None and array.shape[1] != feature_dim:
            raise StpnError(f"{path}: {array.shape[1]} values per snippet, the model expects {feature_dim}")
        if not np.all(np.isfinite(array)):
            raise StpnError(f"{path}: contains NaN or infinite values")
    if "flow" in arrays and arrays["rgb"].shape != arrays["flow"].shape:
        raise StpnError(f"{os.path.dirname(os.path.dirname(paths['rgb']))}: {video_id} has rgb "
                        f"{list(arrays['rgb'].shape)} but flow {list(arrays['flow'].shape)}")


def list_videos(root: str) -> tuple[dict[str, str], list[str]]:
    """The videos of every split folder of `root`: ({video id: split}, unfinished video ids).

    A split folder is a subfolder of `root` with an `rgb` or `flow` folder. In a split with a `meta`
    folder, a video without its meta file is unfinished (`stpn extract` writes it last) and left out.

    Raises:
      StpnError: `root` is not a folder, has no split folder, or two split folders hold the same video.
    """
    if not os.path.isdir(root):
        raise StpnError(f"{root}: features folder not found")
    where: dict[str, str] = {}
    unfinished: list[str] = []
    split_dirs = sorted(d for d in os.listdir(root)
                        if any(os.path.isdir(os.path.join(root, d, s)) for s in STREAMS))
    if not split_dirs:
        raise StpnError(f"{root}: no '<split>/rgb' or '<split>/flow' folders (expected "
                        f"{root}/<split>/{{rgb,flow}}/<video>.npy)")
    for split in split_dirs:
        names: set[str] = set()
        for stream in STREAMS:
            folder = os.path.join(root, split, stream)
            if os.path.isdir(folder):
                names |= {n[:-4] for n in os.listdir(folder) if n.endswith(".npy")}
        meta_dir = os.path.join(root, split, META)
        if os.path.isdir(meta_dir):
            finished = {n[:-5] for n in os.listdir(meta_dir) if n.endswith(".json")}
            unfinished += sorted(names - finished)
            names &= finished
        for name in sorted(names):
            if name in where:
                raise StpnError(f"{root}: duplicate video id {name!r} in split folders "
                                f"{where[name]!r} and {split!r}")
            where[name] = split
    return where, unfinished



def reuse_check(root: str, split: str, video_id: str, *, fingerprint: dict[str, Any],
                streams: tuple[str, ...] = STREAMS) -> tuple[VideoFeatures | None, str | None]:
    """Whether a rerun may reuse a video's files: the one rule of `stpn extract`, `stpn localize VIDEO` and Beam.

    A video is reused only when `read_video(..., complete=True)` accepts it (meta readable and naming the
    video, every needed stream a float32 [num_snippets, D] npy with finite values: a truncated or damaged
    file fails here) and its meta's fingerprint equals `fingerprint` (same I3D models and weights, fps,
    stride, crop, TV-L1 options, streams). A meta file without a fingerprint (written before fingerprints
    were recorded) cannot say which models made it, so that video is extracted again.

    Args:
      root, split, video_id: Which video (`video_paths`).
      fingerprint: What this run would write (stpn_tf.extract.pipeline.fingerprint).
      streams: The streams this run extracts.

    Returns:
      (features, None) to reuse; (None, None) when nothing was written for the video yet; (None, reason)
      when its files exist but must be redone, `reason` one line naming the file and why.
    """
    paths = video_paths(root, split, video_id)
    if not os.path.exists(paths["meta"]):
        if any(os.path.exists(paths[s]) for s in STREAMS):
            return None, f"{paths['meta']}: missing (an unfinished video)"
        return None, None
    try:
        features = read_video(root, split, video_id, complete=True, streams=streams)
    except StpnError as error:
        return None, str(error)
    if features.fingerprint is None:
        return None, (f"{paths['meta']}: records no fingerprint (written before fingerprints were kept), so the "
                      "models that made it are unknown")
    difference = fingerprint_difference(features.fingerprint, fingerprint)
    if difference is not None:
        return None, f"{paths['meta']}: made with other models or settings ({difference})"
    return features, None


def fingerprint_difference(recorded: Any, wanted: Any, prefix: str = "") -> str | None:
    """The first differing key of two fingerprints as "key: recorded -> wanted", None when equal."""
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        for key in sorted(set(recorded) | set(wanted)):
            found = fingerprint_difference(recorded.get(key), wanted.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if _normalized(recorded) == _normalized(wanted):
        return None
    return f"{prefix.rstrip('.')}: {_short(recorded)} -> {_short(wanted)}"


def _normalized(value: Any) -> Any:
    # A fingerprint read back from JSON has lists where the run's has tuples, floats where it may have ints.
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."

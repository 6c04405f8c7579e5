"""Video decoding, frame-rate resampling and the I3D crop geometry (OpenCV).

Frames are streamed one at a time so an hour of video never has to sit in memory: a THUMOS14 test video
at 25 fps and 224 x 224 x 3 uint8 is about 150 KB per frame, several GB per video.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator

import cv2
import numpy as np

from stpn_tf.core.errors import StpnError


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What OpenCV reports about a video file before decoding.

    Attributes:
        path: The file.
        fps: Native frame rate (frames per second).
        frame_count: Frame count from the container header; only an estimate for some codecs, so the
            pipeline counts decoded frames itself.
        width: Frame width in pixels.
        height: Frame height in pixels.
    """

    path: str
    fps: float
    frame_count: int
    width: int
    height: int


def probe_video(path: str) -> VideoInfo:
    """Opens `path` with OpenCV and returns its header information.

    Raises:
        StpnError: the file is missing, cannot be opened, or reports no usable frame rate.
    """
    if not os.path.isfile(path):
        raise StpnError(f"{path}: video file not found")
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise StpnError(f"{path}: OpenCV cannot open this file as a video")
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        info = VideoInfo(
                path=path,
                fps=fps,
                frame_count=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if not math.isfinite(fps) or fps <= 0:
        raise StpnError(f"{path}: the container reports no usable frame rate ({fps})")
    return info


def iter_frames(path: str) -> Iterator[np.ndarray]:
    """Yields decoded frames of `path` as uint8 RGB arrays [H, W, 3], in order.

    Raises:
        StpnError: the file cannot be opened.
    """
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise StpnError(f"{path}: OpenCV cannot open this file as a video")
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            # OpenCV decodes to BGR; I3D was trained on RGB.
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def resample_source_index(k: int, source_fps: float, target_fps: float) -> int:
    """Source frame shown at output frame `k` when resampling `source_fps` to `target_fps`.

    Output frame k is the instant k / target_fps; it takes the latest source frame that started at or
    before that instant, floor(k * source_fps / target_fps). Example: 50 -> 25 fps keeps frames 0, 2,
    4, ...; 10 -> 25 fps gives 0, 0, 0, 1, 1, 2, 2, 2, ... (floor(k * 0.4)).
    """
    # The small epsilon keeps exact ratios like 29.97 / 29.97 from flooring 3.9999999 to 3.
    return int(math.floor(k * source_fps / target_fps + 1e-9))


def resampled_frame_count(num_source_frames: int, source_fps: float, target_fps: float) -> int:
    """Number of output frames whose source index is < num_source_frames (the clip's duration)."""
    if num_source_frames <= 0:
        return 0
    count = int(math.ceil(num_source_frames * target_fps / source_fps - 1e-9))
    # Guard the float edge on both sides so the count agrees with resample_source_index exactly.
    while count > 0 and resample_source_index(count - 1, source_fps, target_fps) >= num_source_frames:
        count -= 1
    while resample_source_index(count, source_fps, target_fps) < num_source_frames:
        count += 1
    return count


def iter_resampled(frames: Iterator[np.ndarray], source_fps: float,
                                      target_fps: float) -> Iterator[np.ndarray]:
    """Resamples a frame stream from `source_fps` to `target_fps` (see resample_source_index).

    Frames are repeated when upsampling and dropped when downsampling; nothing is interpolated.
    """
    k = 0
    for index, frame in enumerate(frames):
        while resample_source_index(k, source_fps, target_fps) == index:
            yield frame
            k += 1


def crop_geometry(height: int, width: int, short_side: int = 256,
                                    crop_size: int = 224) -> tuple[int, int, int, int]:
    """Resize target and crop origin for the I3D preprocessing.

    Args:
        height: Source frame height.
        width: Source frame width.
        short_side: Length the shorter side is rescaled to (aspect ratio kept).
        crop_size: Side of the centered square crop.

    Returns:
        (resized_height, resized_width, top, left): the frame is resized to [resized_height,
        resized_width] and the crop is rows top:top+crop_size, columns left:left+crop_size.
        Example: 240 x 320 -> 256 x 341 (320 * 256 / 240 = 341.33, rounded), top 16, left 58.
    """
    if height <= 0 or width <= 0:
        raise StpnError(f"invalid frame size {height} x {width}")
    if crop_size > short_side:
        raise StpnError(f"crop_size {crop_size} is larger than short_side {short_side}")
    scale = short_side / min(height, width)
    resized_h = short_side if height <= width else int(round(height * scale))
    resized_w = short_side if width < height else int(round(width * scale))
    top = (resized_h - crop_size) // 2
    left = (resized_w - crop_size) // 2
    return resized_h, resized_w, top, left


def resize_and_crop(frame: np.ndarray, short_side: int = 256, crop_size: int = 224) -> np.ndarray:
    """Rescales the shorter side of `frame` [H, W, C] to `short_side` and center-crops a square.

    Returns:
        uint8 (or the input dtype) array [crop_size, crop_size, C].
    """
    resized_h, resized_w, top, left = crop_geometry(frame.shape[0], frame.shape[1], short_side, crop_size)
    if (resized_h, resized_w) != frame.shape[:2]:
        shrinking = resized_h < frame.shape[0]
        # INTER_AREA avoids aliasing when shrinking; bilinear is the usual choice when enlarging.
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (resized_w, resized_h), interpolation=interpolation)
    return frame[top:top + crop_size, left:left + crop_size]


def rgb_to_unit_range(frames: np.ndarray) -> np.ndarray:
    """Maps uint8 pixels [..., 3] to float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return frames.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)

"""Synthetic video frames and lossless (FFV1) video files written with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np


def textured_square_frames(num_frames: int, width: int = 64, height: int = 48, step: int = 1, size: int = 16,
                           seed: int = 0) -> np.ndarray:
    """RGB uint8 frames [N, H, W, 3]: a random-texture square moving `step` pixels right per frame
    over a smooth gray background."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture, (3, 3), 0)
    frames = np.full((num_frames, height, width, 3), 90, np.uint8)
    top = (height - size) // 2
    for i in range(num_frames):
        left = 4 + i * step
        frames[i, top:top + size, left:left + size] = texture[:, :max(0, min(size, width - left))]
    return frames


def write_video(path: str, frames: np.ndarray, fps: float) -> None:
    """Writes RGB frames [N, H, W, 3] uint8 as a lossless FFV1 video at `fps`."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()

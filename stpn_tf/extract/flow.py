"""TV-L1 optical flow for the I3D flow stream (OpenCV contrib `cv2.optflow`)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# Flow magnitudes beyond 20 pixels per frame are clipped before scaling to [-1, 1], as for the
# published Kinetics I3D flow model.
FLOW_BOUND = 20.0


@dataclasses.dataclass(frozen=True)
class TVL1Options:
    """Solver settings of OpenCV's Dual TV-L1 (the defaults are OpenCV's own, the standard ones).

    Attributes:
        scales: Pyramid levels (OpenCV default 5). Fewer levels are faster but miss large motions.
        warps: Warpings per level (default 5).
        inner_iterations: Inner iterations per warping (default 30).
        outer_iterations: Outer iterations per warping (default 10).
        epsilon: Stopping tolerance (default 0.01).
    """

    scales: int = 5
    warps: int = 5
    inner_iterations: int = 30
    outer_iterations: int = 10
    epsilon: float = 0.01


class TVL1Flow:
    """Callable computing TV-L1 flow between two consecutive grayscale frames.

    One OpenCV solver object is kept per instance; it is not thread safe, so make one per worker.
    """

    def __init__(self, options: TVL1Options = TVL1Options()):
        self.options = options
        self._solver = cv2.optflow.DualTVL1OpticalFlow_create(
            nscales=options.scales,
            warps=options.warps,
            epsilon=options.epsilon,
            innnerIterations=options.inner_iterations,  # sic: OpenCV's parameter name
            outerIterations=options.outer_iterations,
        )

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Flow from `previous` to `current`.

        Args:
            previous: uint8 grayscale frame [H, W].
            current: uint8 grayscale frame [H, W].

        Returns:
            float32 [H, W, 2] displacement in pixels (x then y), unclipped.
        """
        return self._solver.calc(previous, current, None)


def to_gray(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> uint8 grayscale [H, W]."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def flow_to_unit_range(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Clips flow [..., 2] to [-bound, bound] pixels and scales it to [-1, 1] (float32).

    Example: 3 px -> 0.15, -25 px -> -1.0 with the default bound 20.
    """
    return (np.clip(flow, -bound, bound) / np.float32(bound)).astype(np.float32)

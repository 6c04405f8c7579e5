"""The one place where snippet-grid positions and seconds are converted.

A stream's outputs (attention, T-CAM) live on a grid of `length` positions: either the 400 positions
sampled from the video's `num_snippets` real snippets (the test grid of spec section 2,
stpn_tf.data.grid) or all real snippets (then `length == num_snippets`). Localization may interpolate the grid by an integer factor
`k`; interpolated position `j` sits at grid coordinate `j / k`, so a run of interpolated positions
`[s, e]` (inclusive) covers the continuous grid interval `[s / k, (e + 1) / k]`.

Grid coordinate `g` corresponds to the fractional real snippet `g * num_snippets / length`, and one real
snippet covers `seconds_per_snippet = stride_frames / fps` seconds. Hence

    seconds = g * (num_snippets / length * seconds_per_snippet),   clipped to [0, duration],

with `duration` defaulting to `num_snippets * seconds_per_snippet`.

Every function exists once in numpy and, where the graph needs it, once in TensorFlow; the tests check
that both give the same numbers.
"""

from __future__ import annotations

import numpy as np

from stpn_tf.core.errors import StpnError


def seconds_per_snippet(fps: float, stride_frames: int) -> float:
    """Seconds covered by one feature snippet.

    Args:
      fps: Frame rate at which the features were extracted (25 for the public I3D releases).
      stride_frames: Frames per snippet (16 for I3D stacks).

    Returns:
      `stride_frames / fps`, e.g. 16 / 25 = 0.64 s.
    """
    if not fps > 0 or not stride_frames > 0:
        raise StpnError(f"seconds_per_snippet needs fps > 0 and stride_frames > 0, got fps={fps}, "
                        f"stride_frames={stride_frames}")
    return float(stride_frames) / float(fps)


def grid_to_seconds(grid_coordinate, *, length, num_snippets, seconds_per_snippet, duration=None):
    """Grid coordinates to seconds (numpy, float64).

    Args:
      grid_coordinate: Array-like of grid coordinates (any shape, fractional allowed).
      length: Grid length (positions the outputs were computed on), scalar or broadcastable.
      num_snippets: Real snippet count L, scalar or broadcastable.
      seconds_per_snippet: Seconds per snippet, scalar or broadcastable.
      duration: Video duration in seconds used for clipping; None means `L * seconds_per_snippet`.

    Returns:
      float64 array of seconds in [0, duration].
    """
    grid_coordinate = np.asarray(grid_coordinate, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    num_snippets = np.asarray(num_snippets, dtype=np.float64)
    sps = np.asarray(seconds_per_snippet, dtype=np.float64)
    if duration is None:
        duration = num_snippets * sps
    duration = np.asarray(duration, dtype=np.float64)
    # Per-video factor first, then one multiplication: the graph version uses the same order (and a
    # single broadcast multiply leaves TF's graph optimizer nothing to reassociate).
    seconds = grid_coordinate * (num_snippets / length * sps)
    return np.clip(seconds, 0.0, duration)


def positions_to_seconds(positions, *, interpolation, length, num_snippets, seconds_per_snippet, duration=None):
    """Interpolated positions (grid coordinate = position / k) to seconds (numpy, float64).

    `positions * (L / (length * k) * seconds_per_snippet)`, clipped to [0, duration]: the formula of
    `grid_to_seconds` with the division by k folded into the per-video factor. A run [s, e] spans
    positions s and e + 1.

    Args:
      positions: Array-like of interpolated positions (integers, possibly as floats).
      interpolation: Interpolation factor k.
      length: Grid length, scalar or broadcastable.
      num_snippets: Real snippet count L, scalar or broadcastable.
      seconds_per_snippet: Seconds per snippet, scalar or broadcastable.
      duration: Clip bound; None (or a NaN entry) means `L * seconds_per_snippet`.

    Returns:
      float64 array of seconds.
    """
    positions = np.asarray(positions, np.float64)
    num_snippets = np.asarray(num_snippets, np.float64)
    sps = np.asarray(seconds_per_snippet, np.float64)
    scale = np.asarray(length, np.float64) * float(interpolation)
    if duration is None:
        duration = num_snippets * sps
    else:
        duration = np.asarray(duration, np.float64)
        duration = np.where(np.isnan(duration), num_snippets * sps, duration)
    return np.clip(positions * (num_snippets / scale * sps), 0.0, duration)


def positions_to_seconds_tf(positions: tf.Tensor, *, interpolation: int, length: tf.Tensor,
                            num_snippets: tf.Tensor, seconds_per_snippet: tf.Tensor,
                            duration: tf.Tensor | None = None) -> tf.Tensor:
    """Graph version of `positions_to_seconds` (float64; arguments broadcast, e.g. [B, K, 2] and [B, 1, 1]).

    The per-video factor divides by the runtime tensor `length * k`, never by a constant: TF's graph
    optimizer and XLA turn division by a constant into multiplication by its reciprocal while eager
    execution divides, which would make the three execution modes differ in the last bit.
    """
    import tensorflow as tf  # here: the numpy functions above serve callers without TensorFlow

    f64 = tf.float64
    num_snippets = tf.cast(num_snippets, f64)
    sps = tf.cast(seconds_per_snippet, f64)
    # Empty (length 0) videos have no detections; the guard only keeps NaN out of the padding.
    scale = tf.cast(tf.maximum(length, 1) * int(interpolation), f64)
    # A NaN duration is one not given (the Localizer passes NaN for None, so that calls with and without
    # durations share one traced function).
    if duration is None:
        duration = num_snippets * sps
    else:
        duration = tf.cast(duration, f64)
        duration = tf.where(tf.math.is_nan(duration), num_snippets * sps, duration)
    seconds = tf.cast(positions, f64) * (num_snippets / scale * sps)
    return tf.clip_by_value(seconds, tf.zeros_like(seconds), tf.broadcast_to(duration, tf.shape(seconds)))

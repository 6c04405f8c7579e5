"""Bounds derived from the data, in numpy: the eager Localizer's first pass.

Before it compiles anything, the eager Localizer measures how many classes pass and how many components a
(video, class) row can have, and picks compiled shapes just large enough (stpn_tf.core.buckets). These
are upper bounds; where rounding could make one too small, the graph reports an overflow and the
Localizer runs the configured bounds instead, so the output never depends on them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stpn_tf.localize.config import LocalizerConfig


def passing_class_bound(rgb: Mapping, flow: Mapping, class_threshold: float) -> int:
    """The largest number of classes of one video that pass `class_threshold` in either stream.

    Args:
      rgb, flow: Stream outputs with "probabilities" [B, C] (arrays or eager tensors).
      class_threshold: A stream proposes class c iff its probability >= this.
    """
    passing = np.zeros(np.shape(rgb["probabilities"]), bool)
    for stream in (rgb, flow):
        passing |= np.asarray(stream["probabilities"], np.float64) >= class_threshold
    return int(passing.sum(axis=1).max(initial=0))


def component_count_bound(rgb: Mapping, flow: Mapping, lengths, config: LocalizerConfig) -> np.ndarray:
    """An upper bound of the components per video, stream and class, in numpy (the eager first pass).

    The interpolated sequence is linear between grid samples (and past the last one), so every run of
    interpolated positions above a threshold lies in a run of consecutive "knots" above it, the knots
    being the samples 0 .. length - 1 and the extrapolated value at the last interpolated position; runs
    of knots are counted. Rounding differences with the graph are caught there (the overflow of
    `graph.localize_with_bounds`).

    Args:
      rgb, flow: Stream outputs as for `localize` (arrays or eager tensors).
      lengths: [B] valid grid positions.
      config: The settings (signal, normalisation, thresholds, class threshold, interpolation).

    Returns:
      int64 [B, 2, C]: components summed over the thresholds; 0 where the stream rejects the class.
    """
    lengths = np.asarray(lengths, np.int64)
    k = int(config.interpolation)
    counts = []
    own = [np.asarray(stream["probabilities"], np.float64) >= config.class_threshold for stream in (rgb, flow)]
    for index, stream in enumerate((rgb, flow)):
        if config.proposal_streams == "both":
            kept = own[index]                                                                   # [B, C]
        else:  # the one proposing stream proposes every class passing in either stream
            kept = (own[0] | own[1]) & (config.proposal_streams == ("rgb", "flow")[index])
        videos = np.flatnonzero(kept.any(axis=1))  # only videos with a kept class (one-class rows: half)
        attention = np.asarray(stream["attention"])[videos].astype(np.float64)
        tcam = np.asarray(stream["tcam"])[videos].astype(np.float64)
        length = lengths[videos]
        b, t, c = tcam.shape
        if config.proposal_signal == "attention":
            signal = np.broadcast_to(attention[:, :, np.newaxis], tcam.shape)
        else:
            signal = attention[:, :, np.newaxis] / (1.0 + np.exp(-tcam))
        inside = np.arange(t)[np.newaxis, :, np.newaxis] < length[:, np.newaxis, np.newaxis]
        if config.normalize:
            x = signal.astype(np.float32).astype(np.float64)
            lo = np.maximum(np.where(inside, x, np.inf).min(axis=1, keepdims=True, initial=np.inf), 0.0)
            hi = np.maximum(np.where(inside, x, -np.inf).max(axis=1, keepdims=True, initial=-np.inf), 0.0)
            lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
            signal = (x - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
        rows = np.arange(b)
        last = signal[rows, np.maximum(length - 1, 0)]                                    # [B', C]
        slope = np.where((length >= 2)[:, np.newaxis], last - signal[rows, np.maximum(length - 2, 0)], 0.0)
        knots = np.concatenate([np.where(inside, signal, -np.inf), np.full((b, 1, c), -np.inf)], axis=1)
        knots[rows, length] = np.where((length > 0)[:, np.newaxis], last + slope * ((k - 1) / k), -np.inf)
        total = np.zeros(kept.shape, np.int64)
        for threshold in config.thresholds:
            above = knots > threshold
            total[videos] += np.sum(above[:, 1:] & ~above[:, :-1], axis=1) + above[:, 0]
        counts.append(np.where(kept, total, 0))
    return np.stack(counts, axis=1)

"""Plain numpy reference of STPN localization (spec section 3) for one video.

Written directly from the spec, position by position, so that it can check the batched graph version
in `stpn_tf.localize.graph` (which computes the same thing a different way). It is also usable on its own for
a handful of videos; it is not meant to be fast (`numpy_engine` computes the same vectorized within a class,
for `stpn localize --raw`, and shares its input checks, class selection and final order).

Conventions shared with `stpn_tf.localize.graph` (both document them; the tests hold them to it):
- Inputs are converted to float64 before any arithmetic.
- Class rejection is per stream: stream s proposes class c only if `p_s[c] >= class_threshold`.
- Interpolation by factor k puts position j at grid coordinate j / k, j = 0 .. length * k - 1. Past the
  last sample the sequence is extrapolated linearly from the last two samples (scipy's `interp1d` with
  `fill_value="extrapolate"` on `arange(0, length, 1 / k)`, as in the public TF reproduction); a
  length-1 sequence is constant.
- Thresholding is strict: an interpolated position belongs to a proposal iff `psi > tcam_threshold`.
- Proposal score = mean of the interpolated score sequence over the proposal's positions.
- tIoU for NMS is computed on the continuous intervals [s / k, (e + 1) / k] (no +1 in the lengths), and
  a proposal is suppressed by a kept one when tIoU > nms_threshold (strictly).
- Optional bound `max_classes_per_video` (Q): of the classes passing the threshold in at least one
  stream, only the Q with the highest probability (the larger over the passing streams; ties: lower
  class index) are localized.
- Optional bound `max_components_per_class` (M): a stream proposing more than M components for one class
  keeps its M highest-scoring ones (ties: earlier start first) before NMS.
- NMS order per class: score descending; ties RGB before FLOW, then earlier start.
- Final order: score descending; ties by class index, then RGB before FLOW, then earlier start. The
  first `max_detections` are returned.
- Seconds come from `stpn_tf.timeline.positions_to_seconds`.

The options beyond the paper (LocalizerConfig): the proposing stream(s), the proposal signal (psi or the attention), its min-max
normalisation per class over the `length` samples (before interpolation), several thresholds whose
components are pooled (a component is identified by stream, start, threshold index: the last breaks ties
after the start), OIC scoring and Gaussian soft-NMS (final ties after soft-NMS: the NMS order), a
minimum score after NMS (`min_score`, kept when score >= it) and a cut of each video's final list to its
`detections_per_video` best (after the `max_detections` cut; 0: none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import math

import numpy as np

from stpn_tf.localize import timeline
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.core.errors import StpnError

STREAMS = ("rgb", "flow")


class Detection(NamedTuple):
    """One detection: class index, score, start and end in seconds."""

    class_index: int
    score: float
    start: float
    end: float


def interpolate(values: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation by an integer factor with linear extrapolation past the last sample.

    Args:
      values: [N] or [N, C] samples at grid coordinates 0 .. N - 1.
      factor: k >= 1.

    Returns:
      [N * k] or [N * k, C]: the value at coordinate j / k for j = 0 .. N * k - 1.
    """
    values = np.asarray(values, np.float64)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    n = values.shape[0]
    positions = np.arange(n * factor) / factor
    if n == 1:
        out = np.repeat(values, factor, axis=0)
    else:
        out = np.empty((n * factor, values.shape[1]), np.float64)
        inside = positions <= n - 1
        grid = np.arange(n, dtype=np.float64)
        for c in range(values.shape[1]):
            column = values[:, c]
            out[inside, c] = np.interp(positions[inside], grid, column)
            slope = column[-1] - column[-2]
            out[~inside, c] = column[-1] + (positions[~inside] - (n - 1)) * slope
    return out[:, 0] if squeeze else out


def connected_components(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D boolean mask, as inclusive (start, end) index pairs, in order."""
    padded = np.concatenate([[0], np.asarray(mask, np.int8), [0]])
    change = np.diff(padded)
    starts = np.flatnonzero(change == 1)
    ends = np.flatnonzero(change == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """tIoU of two inclusive runs of interpolated positions, as continuous intervals [s, e + 1]."""
    inter = max(0, min(a[1], b[1]) + 1 - max(a[0], b[0]))
    union = (a[1] + 1 - a[0]) + (b[1] + 1 - b[0]) - inter
    return inter / union


def min_max_normalized(x: np.ndarray) -> np.ndarray:
    """(x - lo) / (hi - lo) with lo, hi the min and max of x clipped below at 0; a range <= 0 counts as 1.

    x is rounded to float32 values first, as the graph does (see ops.min_max_normalized).
    """
    x = np.asarray(x, np.float32).astype(np.float64)
    lo, hi = max(float(np.min(x)), 0.0), max(float(np.max(x)), 0.0)
    delta = hi - lo
    return (x - lo) / (delta if delta > 0 else 1.0)


def outer_mean(sequence: np.ndarray, start: int, end: int, margin: float) -> float:
    """Mean of `sequence` over the margins of margin x length beside the run [start, end] (0 if none)."""
    size = end - start + 1
    outer_first = max(0, math.floor(start - margin * size))
    outer_last = min(len(sequence) - 1, math.floor(end + margin * size))
    outer = np.concatenate([sequence[outer_first:start], sequence[end + 1:outer_last + 1]])
    return float(np.mean(outer)) if len(outer) else 0.0


def soft_nms(ordered: list, sigma: float) -> list:
    """Gaussian soft-NMS over proposals in NMS order: [(decayed score, NMS rank, proposal)] in pick order."""
    remaining = [[proposal[0], rank, proposal] for rank, proposal in enumerate(ordered)]
    kept = []
    while remaining:
        best = min(remaining, key=lambda r: (-r[0], r[1]))
        remaining.remove(best)
        kept.append(tuple(best))
        for r in remaining:
            iou = interval_iou(best[2][2:4], r[2][2:4])
            r[0] *= math.exp(-iou * iou / sigma)
    return kept


def stream_arrays(name: str, stream: Mapping[str, np.ndarray], length: int):
    """(attention [length], tcam [length, C], probabilities [C]) of one stream in float64, checked: the keys,
    the shapes, length <= T and no NaN or infinity in what is used."""
    try:
        attention = np.asarray(stream["attention"], np.float64)
        tcam = np.asarray(stream["tcam"], np.float64)
        probabilities = np.asarray(stream["probabilities"], np.float64)
    except KeyError as err:
        raise StpnError(f"localize: stream {name!r} lacks key {err.args[0]!r}") from None
    if attention.ndim != 1 or tcam.ndim != 2 or probabilities.ndim != 1:
        raise StpnError(f"localize: stream {name!r} needs attention [T], tcam [T, C], "
                        f"probabilities [C]; got shapes {attention.shape}, {tcam.shape}, {probabilities.shape}")
    if tcam.shape[0] != attention.shape[0] or tcam.shape[1] != probabilities.shape[0]:
        raise StpnError(f"localize: stream {name!r} shapes disagree: attention {attention.shape}, "
                        f"tcam {tcam.shape}, probabilities {probabilities.shape}")
    if length > attention.shape[0]:
        raise StpnError(f"localize: length {length} exceeds the {attention.shape[0]} positions "
                        f"of stream {name!r}")
    attention, tcam = attention[:length], tcam[:length]
    for what, arr in (("attention", attention), ("tcam", tcam), ("probabilities", probabilities)):
        if not np.all(np.isfinite(arr)):
            raise StpnError(f"localize: stream {name!r} {what} has NaN or infinite values")
    return attention, tcam, probabilities


class VideoInputs(NamedTuple):
    """One video's checked inputs: {stream: (attention [length], tcam [length, C], probabilities [C])} in
    float64, the mixed T-CAM alpha a_rgb + (1 - alpha) a_flow [length, C], the video score [C], and the
    selected classes (passing in a stream, at most Q, in priority order)."""

    streams: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    mixed_tcam: np.ndarray
    video_score: np.ndarray
    selected: list[int]


def video_inputs(rgb: Mapping[str, np.ndarray], flow: Mapping[str, np.ndarray], *, length: int,
                 config: LocalizerConfig) -> VideoInputs | None:
    """The checked inputs of one video (see VideoInputs); None when length is 0 (no detections)."""
    if length < 0:
        raise StpnError(f"localize: length must be >= 0, got {length}")
    arrays = {name: stream_arrays(name, stream, length) for name, stream in (("rgb", rgb), ("flow", flow))}
    if arrays["rgb"][1].shape[1] != arrays["flow"][1].shape[1]:
        raise StpnError("localize: rgb and flow streams have different numbers of classes")
    if length == 0:
        return None
    alpha = config.alpha
    mixed_tcam = alpha * arrays["rgb"][1] + (1.0 - alpha) * arrays["flow"][1]        # [length, C]
    video_score = alpha * arrays["rgb"][2] + (1.0 - alpha) * arrays["flow"][2]       # [C]
    passing = {}
    for c in range(mixed_tcam.shape[1]):
        passing_probabilities = [arrays[name][2][c] for name in STREAMS
                                 if arrays[name][2][c] >= config.class_threshold]
        if passing_probabilities:
            passing[c] = max(passing_probabilities)
    selected = sorted(passing, key=lambda c: (-passing[c], c))
    if config.max_classes_per_video is not None:
        selected = selected[:config.max_classes_per_video]
    return VideoInputs(arrays, mixed_tcam, video_score, selected)


def proposing_classes(selected: list[int], probabilities: np.ndarray, stream: str,
                      config: LocalizerConfig) -> list[int]:
    """The classes `stream` proposes, in class order."""
    if config.proposal_streams == "both":
        # The paper: a stream proposes the selected classes that pass in it.
        return sorted(c for c in selected if probabilities[c] >= config.class_threshold)
    # One proposing stream: every selected class (passing in either stream).
    return sorted(selected) if stream == config.proposal_streams else []


def final_order(kept: list[tuple], config: LocalizerConfig) -> list[tuple]:
    """A video's detections after NMS, rows (score, class, NMS rank, start, end): those scoring at least
    `min_score`, score descending (ties: class, then NMS rank), the first `max_detections`, then the first
    `detections_per_video` (0: all)."""
    kept = [d for d in kept if d[0] >= config.min_score]  # after NMS; -inf keeps all
    kept.sort(key=lambda d: (-d[0], d[1], d[2]))
    kept = kept[:config.max_detections]
    if config.detections_per_video:
        kept = kept[:config.detections_per_video]
    return kept


def localize_video(rgb: Mapping[str, np.ndarray], flow: Mapping[str, np.ndarray], *, length: int,
                   num_snippets: int, seconds_per_snippet: float, duration: float | None = None,
                   config: LocalizerConfig = LocalizerConfig()) -> list[Detection]:
    """Detections for one video from both streams' outputs.

    Args:
      rgb: {"attention": [T], "tcam": [T, C] (raw, no bias), "probabilities": [C]} of the RGB stream.
      flow: The same for the flow stream (same T and C).
      length: Valid grid positions (the first `length` of T are used); 0 gives no detections.
      num_snippets: Real snippets L of the video the grid was sampled from.
      seconds_per_snippet: stride_frames / fps.
      duration: Clip bound in seconds; None means L * seconds_per_snippet.
      config: class_threshold (per-stream rejection, >=), tcam_threshold (psi > it), alpha (RGB weight
        of the score sequence), interpolation k, nms_threshold (suppress tIoU > it), max_detections (keep
        the first in the final order), max_components_per_class M and max_classes_per_video Q (module
        docstring). Only the plain values are read; the arithmetic here is independent of the graph.

    Returns:
      Detections (class index, score, start s, end s), score descending with the documented tie order.
    """
    inputs = video_inputs(rgb, flow, length=length, config=config)
    if inputs is None:
        return []
    k, nms_threshold = int(config.interpolation), config.nms_threshold
    arrays, mixed_tcam, video_score = inputs.streams, inputs.mixed_tcam, inputs.video_score
    num_classes = mixed_tcam.shape[1]

    # candidates[c]: (score, stream index, start, end, threshold index); start/end inclusive positions.
    candidates: dict[int, list[tuple[float, int, int, int, int]]] = {c: [] for c in range(num_classes)}
    for stream_index, name in enumerate(STREAMS):
        attention, tcam, probabilities = arrays[name]
        psi = attention[:, None] * (1.0 / (1.0 + np.exp(-tcam)))                      # [length, C]
        signal = np.repeat(attention[:, None], num_classes, 1) if config.proposal_signal == "attention" else psi
        if config.normalize:
            signal = np.stack([min_max_normalized(signal[:, c]) for c in range(num_classes)], 1)
        score_sequence = attention[:, None] * mixed_tcam                                 # [length, C]
        signal_fine = interpolate(signal, k)                                             # [length*k, C]
        score_fine = interpolate(score_sequence, k)
        for c in proposing_classes(inputs.selected, probabilities, name, config):
            proposals = []
            for p, threshold in enumerate(config.thresholds):
                for start, end in connected_components(signal_fine[:, c] > threshold):
                    score = float(np.mean(score_fine[start:end + 1, c]))
                    if config.scoring == "oic":
                        score = score - outer_mean(score_fine[:, c], start, end, config.oic_margin) \
                            + config.oic_gamma * float(video_score[c])
                    proposals.append((score, stream_index, start, end, p))
            if config.max_components_per_class is not None:
                proposals.sort(key=lambda q: (-q[0], q[2], q[4]))
                proposals = proposals[:config.max_components_per_class]
            candidates[c].extend(proposals)

    kept_all = []
    for c in range(num_classes):
        ordered = sorted(candidates[c], key=lambda q: (-q[0], q[1], q[2], q[4]))
        if config.nms == "soft":
            kept = soft_nms(ordered, config.soft_nms_sigma)
        else:
            kept = []
            for rank, proposal in enumerate(ordered):
                if all(interval_iou(proposal[2:4], other[2:4]) <= nms_threshold for _, other in kept):
                    kept.append((rank, proposal))
            kept = [(proposal[0], rank, proposal) for rank, proposal in kept]
        kept_all.extend((score, c, rank, proposal[2], proposal[3]) for score, rank, proposal in kept)

    detections = []
    for score, c, _, start, end in final_order(kept_all, config):
        # The run [start, end] covers grid coordinates [start / k, (end + 1) / k].
        seconds = timeline.positions_to_seconds(np.array([start, end + 1]), interpolation=k, length=length,
                                                num_snippets=num_snippets,
                                                seconds_per_snippet=seconds_per_snippet, duration=duration)
        detections.append(Detection(int(c), float(score), float(seconds[0]), float(seconds[1])))
    return detections

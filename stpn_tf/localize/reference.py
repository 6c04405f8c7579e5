"""Plain numpy reference of STPN localization (spec section 3), one video at a time, without TensorFlow.

Written directly from the spec, class by class and proposal by proposal, so that it can check the batched
graph version in `stpn_tf.localize.graph` (which computes the same thing a different way: prefix sums of
the interpolated segments, exact sort keys, bounded slots). Vectorized only within a class (interpolation,
run sums, the tIoU matrix of NMS), it also localizes saved raw outputs without TensorFlow
(`localize_raw_outputs`, what `stpn localize --raw` runs): there the start-up of TensorFlow and a first
compile would cost more than the whole localization.

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

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import math

import numpy as np

from stpn_tf.artifacts.raw_outputs import RAW_STREAM_KEYS, check_raw_streams, check_single_stream_nms, passing_videos
from stpn_tf.artifacts.results import results_envelope
from stpn_tf.core.errors import StpnError
from stpn_tf.core.streams import stream_roles
from stpn_tf.localize import timeline
from stpn_tf.localize.config import LocalizerConfig

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
        # np.interp's arithmetic on the unit grid, for every column at once: between knots j and j + 1,
        # (v[j + 1] - v[j]) * (x - j) + v[j] (at x = j exactly v[j]); from the last knot on, v[n - 1] plus
        # the last slope times the distance (linear extrapolation).
        offset = positions.reshape(n, factor) - np.arange(n)[:, np.newaxis]                # x - j, [n, k]
        out = np.empty((n, factor, values.shape[1]), np.float64)
        out[:-1] = (values[1:] - values[:-1])[:, np.newaxis, :] * offset[:-1, :, np.newaxis] \
            + values[:-1, np.newaxis, :]
        slope = values[-1] - values[-2]
        out[-1] = values[-1] + (positions[-factor:, np.newaxis] - (n - 1)) * slope
        out = out.reshape(n * factor, values.shape[1])
    return out[:, 0] if squeeze else out


def connected_components(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D boolean mask, as inclusive (start, end) index pairs, in order."""
    padded = np.concatenate([[0], np.asarray(mask, np.int8), [0]])
    change = np.diff(padded)
    starts = np.flatnonzero(change == 1)
    ends = np.flatnonzero(change == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def min_max_normalized(x: np.ndarray) -> np.ndarray:
    """(x - lo) / (hi - lo) with lo, hi the min and max of x clipped below at 0; a range <= 0 counts as 1.

    x is rounded to float32 values first, as the graph does (see ops.min_max_normalized).
    """
    x = np.asarray(x, np.float32).astype(np.float64)
    lo, hi = max(float(np.min(x)), 0.0), max(float(np.max(x)), 0.0)
    delta = hi - lo
    return (x - lo) / (delta if delta > 0 else 1.0)


def outer_means(sequence: np.ndarray, starts: np.ndarray, ends: np.ndarray, margin: float) -> np.ndarray:
    """Mean of `sequence` over the margins of margin x length beside each run [start, end] (0 where the
    margins are empty, at both ends of the video)."""
    size = ends - starts + 1
    first = np.maximum(0, np.floor(starts - margin * size)).astype(np.int64)
    last = np.minimum(len(sequence) - 1, np.floor(ends + margin * size)).astype(np.int64)
    padded = np.append(sequence, 0.0)

    def sums(lo, hi):  # sum of sequence[lo:hi] per run (reduceat gives a[lo] for an empty range: masked)
        total = np.add.reduceat(padded, np.stack([lo, hi], 1).ravel())[::2]
        return np.where(hi > lo, total, 0.0)

    count = (starts - first) + (last - ends)
    total = sums(first, starts) + sums(ends + 1, last + 1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def interval_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] tIoU of runs [start, end] of interpolated positions (rows of a and b, float64
    positions, which hold the integers exactly), as continuous intervals [s, e + 1]."""
    a, b = a[:, np.newaxis, :], b[np.newaxis, :, :]
    inter = np.maximum(0.0, np.minimum(a[..., 1], b[..., 1]) + 1.0 - np.maximum(a[..., 0], b[..., 0]))
    union = (a[..., 1] + 1.0 - a[..., 0]) + (b[..., 1] + 1.0 - b[..., 0]) - inter
    return inter / union


def greedy_nms(ordered: np.ndarray, nms_threshold: float) -> list[tuple[float, int]]:
    """Hard NMS over proposal rows in NMS order: [(score, NMS rank)] of the kept ones, in order.

    A proposal is kept when its tIoU with every proposal kept before it is <= nms_threshold.
    """
    runs = ordered[:, 2:4]
    overlaps = interval_ious(runs, runs) > nms_threshold
    has_overlap = (overlaps.sum(axis=1) > 1).tolist()  # beyond itself (tIoU 1)
    suppressed = np.zeros(len(ordered), bool)
    kept = []
    for rank in range(len(ordered)):
        if suppressed[rank]:
            continue
        kept.append((float(ordered[rank, 0]), rank))
        if has_overlap[rank]:
            suppressed |= overlaps[rank]
    return kept


def soft_nms(ordered: np.ndarray, sigma: float) -> list[tuple[float, int]]:
    """Gaussian soft-NMS over proposal rows in NMS order: [(decayed score, NMS rank)] in pick order.

    Each pick is the remaining proposal of highest decayed score (ties: the earlier NMS rank); the scores
    of the others are multiplied by exp(-tIoU^2 / sigma) (exactly 1 for the disjoint ones).
    """
    decay = np.exp(-interval_ious(ordered[:, 2:4], ordered[:, 2:4]) ** 2 / sigma)  # [n, n]
    scores = ordered[:, 0].copy()
    picked = np.zeros(len(ordered), bool)
    kept = []
    for _ in range(len(ordered)):
        # argmax returns the first maximum: among equal scores the earliest NMS rank.
        best = int(np.argmax(np.where(picked, -np.inf, scores)))
        kept.append((float(scores[best]), best))
        picked[best] = True
        scores *= decay[best]  # the picked ones' scores are no longer read
    return kept


def _stream_arrays(name: str, stream: Mapping[str, np.ndarray], length: int):
    try:
        attention = np.asarray(stream["attention"], np.float64)
        tcam = np.asarray(stream["tcam"], np.float64)
        probabilities = np.asarray(stream["probabilities"], np.float64)
    except KeyError as err:
        raise StpnError(f"reference localize: stream {name!r} lacks key {err.args[0]!r}") from None
    if attention.ndim != 1 or tcam.ndim != 2 or probabilities.ndim != 1:
        raise StpnError(f"reference localize: stream {name!r} needs attention [T], tcam [T, C], "
                        f"probabilities [C]; got shapes {attention.shape}, {tcam.shape}, {probabilities.shape}")
    if tcam.shape[0] != attention.shape[0] or tcam.shape[1] != probabilities.shape[0]:
        raise StpnError(f"reference localize: stream {name!r} shapes disagree: attention {attention.shape}, "
                        f"tcam {tcam.shape}, probabilities {probabilities.shape}")
    if length > attention.shape[0]:
        raise StpnError(f"reference localize: length {length} exceeds the {attention.shape[0]} positions "
                        f"of stream {name!r}")
    attention, tcam = attention[:length], tcam[:length]
    for what, arr in (("attention", attention), ("tcam", tcam), ("probabilities", probabilities)):
        if not np.all(np.isfinite(arr)):
            raise StpnError(f"reference localize: stream {name!r} {what} has NaN or infinite values")
    return attention, tcam, probabilities


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
    classes, scores, seconds = localize_arrays(rgb, flow, length=length, num_snippets=num_snippets,
                                               seconds_per_snippet=seconds_per_snippet, duration=duration,
                                               config=config)
    return [Detection(c, score, start, end)
            for c, score, (start, end) in zip(classes.tolist(), scores.tolist(), seconds.tolist())]


def localize_arrays(rgb: Mapping[str, np.ndarray], flow: Mapping[str, np.ndarray], *, length: int,
                    num_snippets: int, seconds_per_snippet: float, duration: float | None = None,
                    config: LocalizerConfig = LocalizerConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`localize_video` as arrays: (class indices int64 [N], scores float64 [N], seconds float64 [N, 2])."""
    class_threshold, alpha = config.class_threshold, config.alpha
    interpolation, nms_threshold, max_detections = config.interpolation, config.nms_threshold, config.max_detections
    max_components_per_class, max_classes_per_video = config.max_components_per_class, config.max_classes_per_video
    if length < 0:
        raise StpnError(f"reference localize: length must be >= 0, got {length}")
    k = int(interpolation)
    arrays = {name: _stream_arrays(name, stream, length) for name, stream in (("rgb", rgb), ("flow", flow))}
    if arrays["rgb"][1].shape[1] != arrays["flow"][1].shape[1]:
        raise StpnError("reference localize: rgb and flow streams have different numbers of classes")
    if length == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, 2), np.float64)
    num_classes = arrays["rgb"][1].shape[1]
    mixed_tcam = alpha * arrays["rgb"][1] + (1.0 - alpha) * arrays["flow"][1]        # [length, C]
    video_score = alpha * arrays["rgb"][2] + (1.0 - alpha) * arrays["flow"][2]       # [C]

    passing = {}
    for c in range(num_classes):
        passing_probabilities = [arrays[name][2][c] for name in STREAMS if arrays[name][2][c] >= class_threshold]
        if passing_probabilities:
            passing[c] = max(passing_probabilities)
    selected = sorted(passing, key=lambda c: (-passing[c], c))
    if max_classes_per_video is not None:
        selected = selected[:max_classes_per_video]

    # candidates[c]: rows (score, stream index, start, end, threshold index); start/end inclusive positions.
    candidates: dict[int, list[np.ndarray]] = {c: [] for c in range(num_classes)}
    for stream_index, name in enumerate(STREAMS):
        attention, tcam, probabilities = arrays[name]
        if config.proposal_streams == "both":
            # The paper: a stream proposes the selected classes that pass in it.
            proposing = [c for c in selected if probabilities[c] >= class_threshold]
        elif name == config.proposal_streams:
            # One proposing stream: every selected class (passing in either stream).
            proposing = list(selected)
        else:
            proposing = []
        if not proposing:
            continue
        columns = np.array(sorted(proposing))
        psi = attention[:, None] * (1.0 / (1.0 + np.exp(-tcam[:, columns])))            # [length, P]
        signal = np.repeat(attention[:, None], len(columns), 1) if config.proposal_signal == "attention" else psi
        if config.normalize:
            signal = np.stack([min_max_normalized(signal[:, j]) for j in range(len(columns))], 1)
        score_sequence = attention[:, None] * mixed_tcam[:, columns]                     # [length, P]
        signal_fine = interpolate(signal, k)                                             # [length*k, P]
        score_fine = interpolate(score_sequence, k)
        for j, c in enumerate(columns):
            proposals = [_proposals(signal_fine[:, j], score_fine[:, j], threshold, p, stream_index, config,
                                    float(video_score[c]))
                         for p, threshold in enumerate(config.thresholds)]
            proposals = np.concatenate(proposals)
            if max_components_per_class is not None and len(proposals) > max_components_per_class:
                order = np.lexsort((proposals[:, 4], proposals[:, 2], -proposals[:, 0]))
                proposals = proposals[order[:max_components_per_class]]
            candidates[int(c)].append(proposals)

    kept_all = []  # rows (score, class, NMS rank, start, end)
    for c in range(num_classes):
        if not candidates[c]:
            continue
        proposals = np.concatenate(candidates[c])
        ordered = proposals[np.lexsort((proposals[:, 4], proposals[:, 2], proposals[:, 1], -proposals[:, 0]))]
        if config.nms == "soft":
            kept = soft_nms(ordered, config.soft_nms_sigma)
        else:
            kept = greedy_nms(ordered, nms_threshold)
        kept_all.extend((score, c, rank, ordered[rank, 2], ordered[rank, 3]) for score, rank in kept)
    kept_all = [d for d in kept_all if d[0] >= config.min_score]  # after NMS; -inf keeps all
    kept_all.sort(key=lambda d: (-d[0], d[1], d[2]))
    kept_all = kept_all[:max_detections]
    if config.detections_per_video:
        kept_all = kept_all[:config.detections_per_video]
    if not kept_all:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, 2), np.float64)

    # A run [start, end] covers grid coordinates [start / k, (end + 1) / k].
    runs = np.array([(start, end + 1) for _, _, _, start, end in kept_all], np.float64)
    seconds = timeline.positions_to_seconds(runs, interpolation=k, length=length, num_snippets=num_snippets,
                                            seconds_per_snippet=seconds_per_snippet, duration=duration)
    return (np.array([c for _, c, _, _, _ in kept_all], np.int64), np.array([d[0] for d in kept_all], np.float64),
            seconds)


def _proposals(signal: np.ndarray, score: np.ndarray, threshold: float, threshold_index: int, stream_index: int,
               config: LocalizerConfig, video_score: float) -> np.ndarray:
    """[N, 5] rows (score, stream index, start, end, threshold index) of one class's runs above `threshold`.

    The score of a run is the mean of `score` over it (OIC: minus the mean over its outer margins, plus
    gamma x the video score).
    """
    runs = np.array(connected_components(signal > threshold), np.int64).reshape(-1, 2)
    rows = np.empty((len(runs), 5), np.float64)
    if not len(runs):
        return rows
    starts, ends = runs[:, 0], runs[:, 1]
    # Each run's sum (reduceat over the pairs [start, end + 1)); + 0.0 turns a sum of -0.0 into 0.0, as a
    # mean (and the graph) gives it.
    bounds = np.stack([starts, ends + 1], 1).ravel()
    sums = np.add.reduceat(np.append(score, 0.0), bounds)[::2] + 0.0
    values = sums / (ends - starts + 1)
    if config.scoring == "oic":
        values = values - outer_means(score, starts, ends, config.oic_margin) + config.oic_gamma * video_score
    rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4] = values, stream_index, starts, ends, threshold_index
    return rows


def localize_raw_outputs(raw: Mapping[str, np.ndarray], config: LocalizerConfig, *,
                         streams: Sequence[str] = ("rgb", "flow")) -> dict[str, Any]:
    """Saved raw outputs (stpn_tf.artifacts.raw_outputs) localized here, without TensorFlow; the results object.

    The detections are those of the Localizer on the same raw outputs (scores and seconds rounded to float32
    as it returns them): both compute in float64 and differ at most in the last bits of a float64, which
    the rounding to float32 absorbs. Where it cannot, the two can differ: a score or second within such a
    distance of a float32 rounding boundary comes out one float32 step apart, and candidates whose scores
    are mathematically equal (constant or quantized signals, which make runs of equal means) can swap
    their order or which of them a cut or NMS keeps, as the last bits decide the tie; XLA also ranks 0.0
    above -0.0 and flushes subnormal numbers to zero (soft-NMS with a tiny sigma). On real model outputs
    none of this occurs in practice. Videos where no class passes the class threshold are not localized
    (they have no detections).
    """
    check_raw_streams(raw, streams)
    check_single_stream_nms(streams, nms=config.nms, nms_threshold=config.nms_threshold)
    first, second = stream_roles(streams)
    classes = [str(c) for c in raw["classes"]]
    video_ids = [str(v) for v in raw["video_id"]]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in video_ids}  # the order of `raw`
    for i in passing_videos(raw, streams=streams, class_threshold=config.class_threshold):
        def stream(name):
            return {key: np.asarray(raw[f"{name}/{key}"][i], np.float32) for key in RAW_STREAM_KEYS}

        duration = float(np.float32(raw["duration"][i]))
        try:
            labels, scores, seconds = localize_arrays(
                stream(first), stream(second), length=int(raw["length"][i]), num_snippets=int(raw["num_snippets"][i]),
                seconds_per_snippet=float(np.float32(raw["seconds_per_snippet"][i])),
                duration=None if math.isnan(duration) else duration, config=config)
        except StpnError as err:
            raise StpnError(f"video {video_ids[i]}: {err}") from None
        results[video_ids[i]] = [
            {"label": classes[c], "score": score, "segment": segment}
            for c, score, segment in zip(labels.tolist(), scores.astype(np.float32).tolist(),
                                         seconds.astype(np.float32).tolist())]
    return results_envelope(results)

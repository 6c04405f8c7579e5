"""STPN localization in numpy, fast enough to serve: what `stpn localize --raw` runs, without TensorFlow.

The algorithm and its conventions are `stpn_tf.localize.reference`'s (the spec's, proposal by proposal, the
oracle the tests hold every implementation to); this module computes the same vectorized within a class:
the interpolation of every proposing class at once, the runs' sums with one `np.add.reduceat`, OIC's outer
means likewise, and NMS over a class's tIoU matrix. For saved raw outputs it needs neither TensorFlow's
start-up nor a compile, which cost more than the whole localization (`bench/localize_raw.py`).

Against the compiled Localizer (`stpn_tf.localize.localizer`): both compute in float64 and round scores and
seconds to float32, which absorbs the last-bit differences of two float64 computations, so the detections
files are the same bytes (the tests compare them byte for byte on every option; the bench on the demo and at
ActivityNet size). They can differ where it cannot: a score or second within a float64 rounding of a float32
boundary comes out one float32 step apart; a score that cancels to nearly 0 (a sum of opposite values)
keeps only the rounding of its sum, which differs with the order of the additions; and candidates whose
scores are equal in real numbers (constant or quantized signals make runs of equal means) can swap their
order or which of them a cut or NMS keeps, as the last bits decide the tie; XLA also ranks 0.0 above -0.0
and flushes subnormal numbers to zero (soft-NMS with a tiny sigma). On model outputs none of this occurs in
practice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stpn_tf.artifacts.raw_outputs import RAW_STREAM_KEYS, check_raw_streams, check_single_stream_nms, passing_videos
from stpn_tf.artifacts.results import results_envelope
from stpn_tf.core.errors import StpnError
from stpn_tf.core.streams import stream_roles
from stpn_tf.localize import timeline
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.localize.reference import (STREAMS, connected_components, final_order, min_max_normalized, proposing_classes,
                                       video_inputs)


def interpolate_columns(values: np.ndarray, factor: int) -> np.ndarray:
    """`reference.interpolate` of every column of values [N, P] at once: [N * factor, P].

    np.interp's arithmetic on the unit grid: between knots j and j + 1, (v[j + 1] - v[j]) * (x - j) + v[j];
    from the last knot on, v[N - 1] plus the last slope times the distance. The same values bit for bit,
    but a knot of -0.0 comes out +0.0 (np.interp returns the knot itself).
    """
    n = values.shape[0]
    positions = np.arange(n * factor) / factor
    if n == 1:
        return np.repeat(values, factor, axis=0)
    offset = positions.reshape(n, factor) - np.arange(n)[:, np.newaxis]                    # x - j, [N, k]
    out = np.empty((n, factor, values.shape[1]), np.float64)
    out[:-1] = (values[1:] - values[:-1])[:, np.newaxis, :] * offset[:-1, :, np.newaxis] + values[:-1, np.newaxis, :]
    out[-1] = values[-1] + (positions[-factor:, np.newaxis] - (n - 1)) * (values[-1] - values[-2])
    return out.reshape(n * factor, values.shape[1])


def range_sums(sequence: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum(sequence[lo:hi]) for each pair of lo and hi (<= len(sequence)), 0 for an empty range."""
    # reduceat over the pairs [lo, hi) (the appended 0 makes hi = len valid; it gives a[lo] for an empty range).
    total = np.add.reduceat(np.append(sequence, 0.0), np.stack([lo, hi], 1).ravel())[::2]
    return np.where(hi > lo, total, 0.0)


def outer_means(sequence: np.ndarray, starts: np.ndarray, ends: np.ndarray, margin: float) -> np.ndarray:
    """Mean of `sequence` over the margins of margin x length beside each run [start, end] (0 where the
    margins are empty, at both ends of the video)."""
    size = ends - starts + 1
    first = np.maximum(0, np.floor(starts - margin * size)).astype(np.int64)
    last = np.minimum(len(sequence) - 1, np.floor(ends + margin * size)).astype(np.int64)
    count = (starts - first) + (last - ends)
    total = range_sums(sequence, first, starts) + range_sums(sequence, ends + 1, last + 1)
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


def localize_arrays(rgb: Mapping[str, np.ndarray], flow: Mapping[str, np.ndarray], *, length: int,
                    num_snippets: int, seconds_per_snippet: float, duration: float | None = None,
                    config: LocalizerConfig = LocalizerConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections for one video, as `stpn_tf.localize.reference.localize_video` defines them, as arrays.

    Returns:
      (class indices int64 [N], scores float64 [N], seconds float64 [N, 2]), in the final order.
    """
    none = np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, 2), np.float64)
    inputs = video_inputs(rgb, flow, length=length, config=config)
    if inputs is None:
        return none
    k, max_components_per_class = int(config.interpolation), config.max_components_per_class
    arrays, mixed_tcam, video_score = inputs.streams, inputs.mixed_tcam, inputs.video_score
    num_classes = mixed_tcam.shape[1]

    # candidates[c]: rows (score, stream index, start, end, threshold index); start/end inclusive positions.
    candidates: dict[int, list[np.ndarray]] = {c: [] for c in range(num_classes)}
    for stream_index, name in enumerate(STREAMS):
        attention, tcam, probabilities = arrays[name]
        proposing = proposing_classes(inputs.selected, probabilities, name, config)
        if not proposing:
            continue
        columns = np.array(proposing)
        psi = attention[:, None] * (1.0 / (1.0 + np.exp(-tcam[:, columns])))            # [length, P]
        signal = np.repeat(attention[:, None], len(columns), 1) if config.proposal_signal == "attention" else psi
        if config.normalize:
            signal = np.stack([min_max_normalized(signal[:, j]) for j in range(len(columns))], 1)
        score_sequence = attention[:, None] * mixed_tcam[:, columns]                     # [length, P]
        signal_fine = interpolate_columns(signal, k)                                     # [length*k, P]
        score_fine = interpolate_columns(score_sequence, k)
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
            kept = greedy_nms(ordered, config.nms_threshold)
        kept_all.extend((score, c, rank, ordered[rank, 2], ordered[rank, 3]) for score, rank in kept)
    kept_all = final_order(kept_all, config)
    if not kept_all:
        return none

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
    # + 0.0 turns a sum of -0.0 into 0.0, as a mean (and the graph) gives it.
    values = (range_sums(score, starts, ends + 1) + 0.0) / (ends - starts + 1)
    if config.scoring == "oic":
        values = values - outer_means(score, starts, ends, config.oic_margin) + config.oic_gamma * video_score
    rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4] = values, stream_index, starts, ends, threshold_index
    return rows


PROGRESS_EVERY = 1000  # videos between two progress reports of localize_raw_outputs


def localize_raw_outputs(raw: Mapping[str, np.ndarray], config: LocalizerConfig, *,
                         streams: Sequence[str] = ("rgb", "flow"),
                         progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Saved raw outputs (stpn_tf.artifacts.raw_outputs) localized here, without TensorFlow: the results
    object, as `stpn_tf.inference.predict.localize_raw` returns it (see the module docstring). Videos where
    no class passes the class threshold are not localized (they have no detections). `progress(done)`, if
    given, hears the number of videos done (in the order of `raw`) every PROGRESS_EVERY videos and at the end.
    """
    check_raw_streams(raw, streams)
    check_single_stream_nms(streams, nms=config.nms, nms_threshold=config.nms_threshold)
    first, second = stream_roles(streams)
    classes = [str(c) for c in raw["classes"]]
    video_ids = [str(v) for v in raw["video_id"]]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in video_ids}  # the order of `raw`

    def stream(name: str, i: int) -> dict[str, np.ndarray]:
        return {key: np.asarray(raw[f"{name}/{key}"][i], np.float32) for key in RAW_STREAM_KEYS}

    reported = 0
    for i in passing_videos(raw, streams=streams, class_threshold=config.class_threshold):
        if progress is not None and i - reported >= PROGRESS_EVERY:
            reported = int(i - i % PROGRESS_EVERY)
            progress(reported)
        duration = float(np.float32(raw["duration"][i]))
        try:
            labels, scores, seconds = localize_arrays(
                stream(first, i), stream(second, i), length=int(raw["length"][i]),
                num_snippets=int(raw["num_snippets"][i]),
                seconds_per_snippet=float(np.float32(raw["seconds_per_snippet"][i])),
                duration=None if math.isnan(duration) else duration, config=config)
        except StpnError as err:
            raise StpnError(f"video {video_ids[i]}: {err}") from None
        results[video_ids[i]] = [
            {"label": classes[c], "score": score, "segment": segment}
            for c, score, segment in zip(labels.tolist(), scores.astype(np.float32).tolist(),
                                         seconds.astype(np.float32).tolist())]
    if progress is not None:
        progress(len(video_ids))
    return results_envelope(results)

"""STPN localization (spec section 3) as batched TensorFlow ops with static output shapes.

`localize` turns both streams' outputs for a batch of videos into a fixed number of padded detections.
It has no Python loop over videos or classes, no host callbacks and no string ops; the same function
runs eagerly, under `tf.function` and under `tf.function(jit_compile=True)` with identical results.
`stpn_tf.localize.reference` is the plain numpy statement of the same algorithm that the tests compare
against; the conventions listed there (float64 arithmetic, strict thresholding, tIoU > nms_threshold
suppresses, tie orders) hold here too.

How the graph avoids materializing the interpolated sequences. Interpolating by k multiplies the work by
k (x24 by default) if done literally. Between grid samples i and i + 1 both psi and the score sequence
are linear in the sub-position r = 0 .. k - 1 (value y_i + d_i * r / k, with d_i the forward difference,
or for the last sample the backward difference: the linear extrapolation). The positions of one interval
where a linear function exceeds the threshold form one contiguous run touching one end of the interval
(a prefix when decreasing, a suffix when increasing, all or nothing when flat), found from the crossing
point; the sum of the score sequence over such a run is an arithmetic series. So everything is computed
per interval, on [B, C, T] tensors, and connected components are chained across intervals: a run starts
a component unless it begins at r = 0 while the previous interval's run reaches r = k - 1, and it ends a
component unless the symmetric condition holds with the next interval. Each interval thus contains at
most one component start and one component end, so a stream has at most T components per class and they
can be indexed by the interval where they end.

Bounds and what happens when they are exceeded:
- `max_classes_per_video` (Q): only classes that pass `class_threshold` in at least one stream are
  localized, at most Q per video: those with the highest video probability (the larger of the streams
  that pass; ties: lower class index). Work scales with Q instead of the number of classes (20 for
  THUMOS14, 200 for ActivityNet). None means all classes.
- `max_components_per_class` (M): per video, stream and class, only the M highest-scoring components
  (ties: earlier start first) enter NMS. With at most M components everywhere, results equal the
  unbounded reference. Sorting costs O(B * Q * 2M log 2M).
- `max_detections` (K): after NMS, the K highest-scoring detections of a video are returned (ties by
  class index, then RGB before FLOW, then earlier start); `num_detections` counts them.
When M or K is exceeded, the cut is made on scores rounded to float32 (XLA's fast top-k, see
`_select_top`); only candidates whose float64 scores differ by less than float32 rounding exactly at
the cut could be exchanged relative to the reference. All orderings are exact in float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from stpn_tf.localize import timeline
from stpn_tf.core.errors import StpnError

STREAM_KEYS = ("attention", "tcam", "probabilities")



PROPOSAL_SIGNALS = ("tcam", "attention")
PROPOSAL_STREAMS = ("both", "rgb", "flow")
SCORINGS = ("mean", "oic")
NMS_KINDS = ("hard", "soft")
# Settings that are inputs of the compiled graph (a new value needs no new compile); every other field
# is structure (interpolation, the number of proposal thresholds, the NMS kind and the bounds).
RUNTIME_FIELDS = ("class_threshold", "tcam_threshold", "proposal_thresholds", "alpha", "nms_threshold",
                  "proposal_streams", "proposal_signal", "normalize", "scoring", "oic_margin", "oic_gamma", "soft_nms_sigma")


@dataclasses.dataclass(frozen=True)
class LocalizerConfig:
    """Every setting of STPN localization (spec section 3), the options beyond it, and the static bounds.

    The defaults are the paper's protocol (configs/thumos14.py holds the same values) and bounds far
    above what a 400-position grid produces, so they do not cap recall. The options after `nms_threshold`
    come from STPN's successors (README "Beyond the paper"); each is off by default and they combine.

    Attributes:
      class_threshold: A stream proposes class c iff its video probability >= this (0.1).
      tcam_threshold: Proposals are runs of the interpolated signal > this (0.05); the paper's signal is
        the weighted T-CAM psi = lambda * sigmoid(a).
      alpha: RGB weight of the score sequence, eq. 7 (0.5).
      interpolation: Integer interpolation factor k (24).
      nms_threshold: Per-class hard NMS suppresses tIoU > this (0.5).
      proposal_thresholds: Several thresholds instead of `tcam_threshold` (empty: the paper's one); the
        components of every threshold are pooled before NMS (BaS-Net, CoLA, DELU).
      proposal_streams: "both" (the paper: each stream proposes the classes passing in it), or "rgb" /
        "flow": only that stream's signal makes proposals, for every class that passes `class_threshold`
        in either stream (the video-level decision still uses both); scores are eq. 7's as always.
      proposal_signal: "tcam" (psi, the paper) or "attention" (lambda itself, class-agnostic proposals
        scored per passing class, as CoLA / DELU threshold their actionness).
      normalize: Min-max normalise the signal per video and class over the valid positions before
        thresholding: (x - max(min, 0)) / (max(max, 0) - max(min, 0)), a range <= 0 counting as 1 (BaS-Net).
      scoring: "mean" (eq. 7's mean) or "oic": outer-inner contrast (AutoLoc, BaS-Net, CoLA): the mean
        inside minus the mean over margins of `oic_margin` x the length on each side, plus `oic_gamma`
        x the class's video probability alpha p_rgb + (1 - alpha) p_flow.
      oic_margin: Margin ratio of OIC (0.25).
      oic_gamma: Weight of the video probability in OIC (0.2).
      nms: "hard" (the paper) or "soft": Gaussian soft-NMS, scores decayed by exp(-tIoU^2 / sigma).
      soft_nms_sigma: sigma of soft-NMS (0.3, DELU).
      max_detections: K, detections kept per video (output slots).
      max_components_per_class: M, proposals per video, stream and class entering NMS (over all thresholds).
      max_classes_per_video: Q, classes localized per video (the most probable), None for all.
    """

    class_threshold: float = 0.1
    tcam_threshold: float = 0.05
    alpha: float = 0.5
    interpolation: int = 24
    nms_threshold: float = 0.5
    proposal_thresholds: tuple = ()
    proposal_streams: str = "both"
    proposal_signal: str = "tcam"
    normalize: bool = False
    scoring: str = "mean"
    oic_margin: float = 0.25
    oic_gamma: float = 0.2
    nms: str = "hard"
    soft_nms_sigma: float = 0.3
    max_detections: int = 1000
    max_components_per_class: int = 200
    max_classes_per_video: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "proposal_thresholds", tuple(float(t) for t in self.proposal_thresholds))
        if int(self.interpolation) != self.interpolation or self.interpolation < 1:
            raise StpnError(f"localize: interpolation must be a positive integer, got {self.interpolation}")
        if self.max_detections < 1 or self.max_components_per_class < 1:
            raise StpnError(f"localize: max_detections and max_components_per_class must be >= 1, got "
                            f"{self.max_detections} and {self.max_components_per_class}")
        if self.max_classes_per_video is not None and self.max_classes_per_video < 1:
            raise StpnError("localize: max_classes_per_video must be >= 1, or 0 / None for all classes, got "
                            f"{self.max_classes_per_video}")
        for name in ("class_threshold", "tcam_threshold", "alpha", "nms_threshold", "oic_margin", "oic_gamma",
                     "soft_nms_sigma"):
            if not math.isfinite(float(getattr(self, name))):
                raise StpnError(f"localize: {name} must be a finite number, got {getattr(self, name)}")
        if not all(math.isfinite(t) for t in self.proposal_thresholds):
            raise StpnError(f"localize: proposal_thresholds must be finite numbers, got {self.proposal_thresholds}")
        for name, allowed in (("proposal_streams", PROPOSAL_STREAMS), ("proposal_signal", PROPOSAL_SIGNALS),
                              ("scoring", SCORINGS), ("nms", NMS_KINDS)):
            if getattr(self, name) not in allowed:
                raise StpnError(f"localize: {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.oic_margin < 0:
            raise StpnError(f"localize: oic_margin must be >= 0, got {self.oic_margin}")
        if self.soft_nms_sigma <= 0:
            raise StpnError(f"localize: soft_nms_sigma must be > 0, got {self.soft_nms_sigma}")

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The proposal thresholds in effect (the paper's single tcam_threshold unless a list is set)."""
        return self.proposal_thresholds or (float(self.tcam_threshold),)

    def structure(self) -> tuple:
        """What the compiled graph depends on; configs with equal structure share one compile."""
        return (int(self.interpolation), len(self.thresholds), self.nms, self.max_detections,
                self.max_components_per_class, self.max_classes_per_video)

    @classmethod
    def from_dict(cls, values: Mapping) -> "LocalizerConfig":
        """From a mapping of (a subset of) the fields; max_classes_per_video 0 means all classes."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise StpnError(f"localize: unknown settings {sorted(unknown)}; known: {sorted(fields)}")
        kwargs = dict(values)
        if kwargs.get("max_classes_per_video") == 0:
            kwargs["max_classes_per_video"] = None
        try:
            for name in ("interpolation", "max_detections", "max_components_per_class"):
                if name in kwargs:
                    kwargs[name] = int(kwargs[name])
            for name in ("class_threshold", "tcam_threshold", "alpha", "nms_threshold", "oic_margin", "oic_gamma",
                         "soft_nms_sigma"):
                if name in kwargs:
                    kwargs[name] = float(kwargs[name])
            if "proposal_thresholds" in kwargs:
                kwargs["proposal_thresholds"] = tuple(float(t) for t in kwargs["proposal_thresholds"])
        except (TypeError, ValueError) as error:
            raise StpnError(f"localize: a setting has the wrong type ({error})") from None
        if "normalize" in kwargs:
            if not isinstance(kwargs["normalize"], (bool, int)):
                raise StpnError(f"localize: normalize must be true or false, got {kwargs['normalize']!r}")
            kwargs["normalize"] = bool(kwargs["normalize"])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["proposal_thresholds"] = list(self.proposal_thresholds)
        return values

    def replace(self, **changes) -> "LocalizerConfig":
        return dataclasses.replace(self, **changes)


def runtime_tensors(config: LocalizerConfig) -> dict[str, tf.Tensor]:
    """The graph inputs that carry `config`'s runtime settings (RUNTIME_FIELDS)."""
    f64 = lambda x: tf.constant(float(x), tf.float64)  # noqa: E731
    return {
        "class_threshold": f64(config.class_threshold),
        "thresholds": tf.constant(config.thresholds, tf.float64),
        "alpha": f64(config.alpha),
        "nms_threshold": f64(config.nms_threshold),
        "proposal_stream": tf.constant(PROPOSAL_STREAMS.index(config.proposal_streams), tf.int32),
        "attention_signal": tf.constant(config.proposal_signal == "attention"),
        "normalize": tf.constant(bool(config.normalize)),
        "oic": tf.constant(config.scoring == "oic"),
        "oic_margin": f64(config.oic_margin),
        "oic_gamma": f64(config.oic_gamma),
        "soft_nms_sigma": f64(config.soft_nms_sigma),
    }


_F64 = tf.float64


def _shift_right(x: tf.Tensor, fill) -> tf.Tensor:
    """x[..., i - 1] at position i along the last axis, `fill` at position 0."""
    pad = tf.fill(tf.concat([tf.shape(x)[:-1], [1]], 0), tf.constant(fill, x.dtype))
    return tf.concat([pad, x[..., :-1]], axis=-1)


def _shift_left(x: tf.Tensor, fill) -> tf.Tensor:
    """x[..., i + 1] at position i along the last axis, `fill` at the last position."""
    pad = tf.fill(tf.concat([tf.shape(x)[:-1], [1]], 0), tf.constant(fill, x.dtype))
    return tf.concat([x[..., 1:], pad], axis=-1)


def _compact_positions(mask: tf.Tensor, num_slots) -> tf.Tensor:
    """For each row of `mask` [B, R, T], the positions of its first `num_slots` True entries, in order.

    Returns int32 [B, R, num_slots]: slot j holds the index of the (j + 1)-th True entry (0 past the
    last one). A scatter of the running count, so no sort and no scan whose steps XLA would fuse into
    repeated work (a doubling running maximum here cost as much as all other elementwise work).
    """
    shape = tf.shape(mask)
    rows = shape[0] * shape[1]
    length = shape[2]
    index = tf.range(length)[tf.newaxis, tf.newaxis, :] + tf.zeros_like(mask, tf.int32)
    ordinal = tf.cumsum(tf.cast(mask, tf.int32), axis=-1) - 1
    slot = tf.where(mask & (ordinal < num_slots), ordinal, num_slots)                   # num_slots: discarded
    row = tf.range(rows)[:, tf.newaxis] * (num_slots + 1)
    target = tf.reshape(row + tf.reshape(slot, [rows, length]), [-1, 1])
    compact = tf.tensor_scatter_nd_max(tf.zeros([rows * (num_slots + 1)], tf.int32), target,
                                       tf.reshape(index, [-1]))
    return tf.reshape(compact, [shape[0], shape[1], num_slots + 1])[..., :num_slots]


def _interval_slopes(y: tf.Tensor, valid_length: tf.Tensor) -> tf.Tensor:
    """Per-interval slope d_i of the interpolated sequence (linear extrapolation at the end).

    Args:
      y: [B, C, T] samples.
      valid_length: [B, 1, 1] int32 number of valid samples.

    Returns:
      [B, C, T] float64: y[i+1] - y[i] for i < length - 1; y[i] - y[i-1] for i = length - 1 (0 when
      length is 1). Entries past the valid length are meaningless (callers mask them).
    """
    index = tf.range(tf.shape(y)[-1])[tf.newaxis, tf.newaxis, :]
    forward = _shift_left(y, 0.0) - y
    backward = tf.where(index >= 1, y - _shift_right(y, 0.0), tf.zeros_like(y))
    return tf.where(index < valid_length - 1, forward, backward)


def _stream_components(psi, score_sequence, valid_length, class_kept, video_score, *, threshold, oic, oic_margin,
                       oic_gamma, k, max_components, slots=None):
    """Connected components of the thresholded interpolated signal of one stream, top M per row.

    A row is one class at one proposal threshold.

    Args:
      psi: [B, R, T] float64 signal samples (the weighted T-CAM, or an option's signal).
      score_sequence: [B, R, T] float64 score-sequence samples.
      valid_length: [B, 1, 1] int32.
      class_kept: [B, R, 1] bool, the stream's class selection.
      video_score: [B, R, 1] float64, the class's video probability (OIC's gamma term).
      threshold: [1, R, 1] float64 threshold of each row (strict).
      oic: bool scalar tensor, outer-inner-contrast scoring instead of the mean.
      oic_margin, oic_gamma: float64 scalar tensors.
      k: Interpolation factor (Python int).
      max_components: M (Python int).
      slots: None, or a bound S on the components of every row derived from the data (Python int):
        then the first S components are returned in order, without a selection (`count` tells whether
        the bound held).

    Returns:
      (score [B, R, M] float64 (-inf where invalid), first [B, R, M] float64, last [B, R, M] float64
      inclusive interpolated positions, valid [B, R, M] bool, count [B, R] int32 components of the row,
      0 for rejected classes): the M best components in no particular order (the caller sorts
      exactly), or with `slots` the first S in start order, valid ones first.
    """
    kf = tf.constant(float(k), _F64)
    index = tf.range(tf.shape(psi)[-1])[tf.newaxis, tf.newaxis, :]
    in_video = index < valid_length                                                      # [B, 1, T]

    slope = _interval_slopes(psi, valid_length)
    # Increasing: the run is r > (th - y) * k / d; decreasing: r < (y - th) * k / (-d). Clipping the
    # crossing keeps tiny slopes from overflowing the integer conversion.
    safe_slope = tf.where(tf.equal(slope, 0.0), tf.ones_like(slope), slope)
    crossing = tf.clip_by_value((threshold - psi) * kf / safe_slope, -2.0, kf + 1.0)
    rising_low = tf.maximum(tf.floor(crossing) + 1.0, 0.0)
    falling_high = tf.minimum(tf.math.ceil(crossing) - 1.0, kf - 1.0)
    above = psi > threshold
    low = tf.where(slope > 0, rising_low, tf.zeros_like(psi))
    high = tf.where(slope < 0, falling_high, tf.fill(tf.shape(psi), kf - 1.0))
    nonempty = tf.where(tf.equal(slope, 0.0), above, low <= high) & in_video
    low = tf.where(nonempty, low, tf.zeros_like(low))
    high = tf.where(nonempty, high, -tf.ones_like(high))
    count = high - low + 1.0                                                             # 0 when empty

    # k times the sum of y_i + d_i * r / k over r in [low, high] (an arithmetic series). Scaling by k
    # keeps constant divisors out of the graph (see timeline.positions_to_seconds_tf for why).
    score_slope = _interval_slopes(score_sequence, valid_length)
    run_sum = count * (kf * score_sequence + score_slope * ((low + high) * 0.5))
    run_sum = tf.where(nonempty, run_sum, tf.zeros_like(run_sum))
    cumulative = tf.cumsum(run_sum, axis=-1)                                             # [B, R, T]

    touches_left = nonempty & tf.equal(low, 0.0)
    touches_right = nonempty & tf.equal(high, kf - 1.0)
    starts = nonempty & ~(touches_left & _shift_right(touches_right, False))
    ends = nonempty & ~(touches_right & _shift_left(touches_left, False))

    # Component j of a row is its (j + 1)-th start and its (j + 1)-th end (starts and ends alternate).
    num_slots = tf.shape(psi)[-1] if slots is None else slots
    start_interval = _compact_positions(starts, num_slots)                               # [B, R, S]
    end_interval = _compact_positions(ends, num_slots)
    count = tf.where(class_kept[..., 0], tf.reduce_sum(tf.cast(ends, tf.int32), axis=-1), 0)   # [B, R]
    at = lambda x, i: tf.gather(x, i, batch_dims=2, axis=2)  # noqa: E731
    first = tf.cast(start_interval, _F64) * kf + at(low, start_interval)
    last = tf.cast(end_interval, _F64) * kf + at(high, end_interval)
    run_total = at(cumulative, end_interval) - at(_shift_right(cumulative, 0.0), start_interval)
    mean_score = run_total / (tf.maximum(last - first + 1.0, 1.0) * kf)
    # A conditional, so that the default scoring does not pay for the outer means.
    score = tf.cond(oic, lambda: mean_score - _outer_mean(score_sequence, score_slope, valid_length, first, last,
                                                         oic_margin=oic_margin, k=k) + oic_gamma * video_score,
                    lambda: mean_score)

    valid = tf.range(num_slots)[tf.newaxis, tf.newaxis, :] < count[..., tf.newaxis]
    neg_inf = tf.constant(-math.inf, _F64)
    ranked_score = tf.where(valid, score, neg_inf)
    if slots is not None:
        # Derived bound: the caller checks that no row has more than `slots` components (`count`).
        return ranked_score, first, last, valid, count
    # Pad with M invalid slots so that top_k works for any T (also T < M).
    pad_shape = tf.concat([tf.shape(psi)[:-1], [max_components]], 0)
    ranked_score = tf.concat([ranked_score, tf.fill(pad_shape, neg_inf)], -1)
    first = tf.concat([first, tf.zeros(pad_shape, _F64)], -1)
    last = tf.concat([last, tf.zeros(pad_shape, _F64)], -1)
    valid = tf.concat([valid, tf.zeros(pad_shape, tf.bool)], -1)
    # Selection only (the exact order is established after merging the streams); see _select_top.
    top_index = _select_top(ranked_score, max_components)
    top_score, top_first, top_last, top_valid = (tf.gather(x, top_index, batch_dims=2, axis=2)
                                                 for x in (ranked_score, first, last, valid))
    return top_score, top_first, top_last, top_valid, count


def _outer_mean(y, slope, valid_length, first, last, *, oic_margin, k):
    """Mean of the interpolated sequence y over the outer margins of runs [first, last] (OIC).

    The margins are [max(0, floor(first - m L)), first) and (last, min(N - 1, floor(last + m L))] with
    L = last - first + 1 and N = length * k interpolated positions; the mean is 0 where both are empty.
    Sums come from prefix sums of the per-interval arithmetic series, as the inner mean.

    Args:
      y, slope: [B, R, T] float64 samples and per-interval slopes (`_interval_slopes`).
      valid_length: [B, 1, 1] int32.
      first, last: [B, R, T'] float64 inclusive interpolated positions (any T').
      oic_margin: float64 scalar tensor m.
      k: Interpolation factor (Python int).
    """
    kf = tf.constant(float(k), _F64)
    index = tf.range(tf.shape(y)[-1])[tf.newaxis, tf.newaxis, :]
    full = tf.where(index < valid_length, kf * (kf * y + slope * ((kf - 1.0) * 0.5)), tf.zeros_like(y))
    zero = tf.zeros_like(full[..., :1])
    before = tf.concat([zero, tf.cumsum(full, axis=-1)], -1)                             # [B, R, T + 1]
    y_pad, slope_pad = tf.concat([y, zero], -1), tf.concat([slope, zero], -1)
    num_intervals = tf.shape(y)[-1]

    def prefix(j):  # k times the sum of the interpolated values at positions 0 .. j - 1
        interval = tf.clip_by_value(tf.cast(tf.floor(j / kf), tf.int32), 0, num_intervals)
        r = j - tf.cast(interval, _F64) * kf
        at = lambda x: tf.gather(x, interval, batch_dims=2, axis=2)  # noqa: E731
        return at(before) + r * (kf * at(y_pad)) + at(slope_pad) * (r * (r - 1.0) * 0.5)

    margin = oic_margin * (last - first + 1.0)
    end = tf.cast(valid_length, _F64) * kf - 1.0
    outer_first = tf.maximum(tf.floor(first - margin), 0.0)
    outer_last = tf.minimum(tf.floor(last + margin), end)
    outer_last = tf.maximum(outer_last, last)
    outer_first = tf.minimum(outer_first, first)
    total = prefix(first) - prefix(outer_first) + prefix(outer_last + 1.0) - prefix(last + 1.0)
    count = (first - outer_first) + (outer_last - last)
    return tf.where(count > 0, total / (tf.maximum(count, 1.0) * kf), tf.zeros_like(total))


def _select_top(score: tf.Tensor, k: int) -> tf.Tensor:
    """Indices of the k best entries along the last axis (unordered use; ties: lower index).

    XLA on CPU has a fast top-k only for float32 (float64 top-k lowers to a full sort, ~5x slower
    here), so the float64 scores are ranked by their float32 roundings. Rounding is monotone, so the
    selection is exact except between distinct scores that round to the same float32 value exactly
    at the cut-off (relative difference < 6e-8), which only matters when there are more than k
    candidates. The order of the selected entries is then fixed exactly by `_exact_order`.
    """
    _, index = tf.math.top_k(tf.cast(score, tf.float32), k=k, sorted=False)
    return index


def _exact_order(score: tf.Tensor, tiebreak: tf.Tensor) -> tf.Tensor:
    """Permutation sorting the last axis by score descending, then tiebreak ascending.

    Two full top-k passes in float64 (exact): first by tiebreak ascending, then, stably, by score
    (top_k puts the lower index first among equal values, so equal scores keep the tiebreak order).
    O(N log N), identical eagerly and under XLA.

    Args:
      score: [..., N] float64 (no NaN).
      tiebreak: [..., N] distinct values per row (any real dtype).

    Returns:
      int32 [..., N]: order[r] = index of the r-th entry.
    """
    n = score.shape[-1]
    _, by_tiebreak = tf.math.top_k(-tf.cast(tiebreak, _F64), k=n, sorted=True)
    _, by_score = tf.math.top_k(tf.gather(score, by_tiebreak, batch_dims=score.shape.rank - 1), k=n, sorted=True)
    return tf.gather(by_tiebreak, by_score, batch_dims=score.shape.rank - 1)


def _greedy_nms(score, first, last, valid, *, nms_threshold):
    """Greedy per-class NMS over candidates already sorted by the NMS order.

    A while loop over candidate slots (at most N steps, stopping after the largest valid count in the
    batch); each step compares one candidate with all kept ones of the same video and class, so memory
    stays O(B * C * N).

    Args:
      score: [B, C, N] float64, sorted descending (only used for shape).
      first: [B, C, N] float64 first interpolated position.
      last: [B, C, N] float64 last interpolated position (inclusive).
      valid: [B, C, N] bool.
      nms_threshold: float64 scalar tensor; suppress when tIoU > this.

    Returns:
      keep [B, C, N] bool.
    """
    num_slots = score.shape[-1]
    # Candidates are sorted valid-first, so no video and class needs more steps than its valid count.
    num_steps = tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1))
    begin, finish = first, last + 1.0
    threshold = nms_threshold

    def body(i, keep):
        b_i = tf.gather(begin, [i], axis=2)                                              # [B, C, 1]
        f_i = tf.gather(finish, [i], axis=2)
        inter = tf.maximum(tf.minimum(f_i, finish) - tf.maximum(b_i, begin), 0.0)
        union = (f_i - b_i) + (finish - begin) - inter
        iou = inter / tf.maximum(union, 1e-12)
        suppressed = tf.reduce_any(keep & (iou > threshold), axis=-1)
        keep_i = tf.gather(valid, i, axis=2) & ~suppressed                               # [B, C]
        keep = keep | (tf.equal(tf.range(num_slots), i) & keep_i[..., tf.newaxis])
        return i + 1, keep

    _, keep = tf.while_loop(lambda i, _: i < num_steps, body, (tf.constant(0), tf.zeros_like(valid)),
                            maximum_iterations=num_slots)
    return keep


def _soft_nms(score, first, last, valid, *, sigma):
    """Gaussian soft-NMS per class over candidates already sorted by the NMS order.

    Repeatedly takes the remaining candidate with the highest current score (ties: earliest in the NMS
    order), keeps it with that score, and multiplies the current score of every remaining candidate of
    the same video and class by exp(-tIoU^2 / sigma). Every valid candidate is kept; its score is the
    decayed one. (Scores are multiplied, so a negative score moves towards 0.)

    Args:
      score, first, last, valid: [B, C, N] as for `_greedy_nms`.
      sigma: float64 scalar tensor.

    Returns:
      (keep [B, C, N] bool, decayed score [B, C, N] float64 (-inf where not kept)).
    """
    num_slots = score.shape[-1]
    num_steps = tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1))
    begin, finish = first, last + 1.0
    neg_inf = tf.constant(-math.inf, _F64)
    slots = tf.range(num_slots)

    def body(i, current, final):
        best = tf.reduce_max(current, axis=-1, keepdims=True)                            # [B, C, 1]
        live = best > neg_inf
        pick = tf.reduce_min(tf.where(tf.equal(current, best) & live, slots, num_slots), axis=-1, keepdims=True)
        chosen = tf.equal(slots, pick)                                                   # [B, C, N]
        b_i = tf.gather(begin, tf.minimum(pick, num_slots - 1), batch_dims=2, axis=2)
        f_i = tf.gather(finish, tf.minimum(pick, num_slots - 1), batch_dims=2, axis=2)
        inter = tf.maximum(tf.minimum(f_i, finish) - tf.maximum(b_i, begin), 0.0)
        union = (f_i - b_i) + (finish - begin) - inter
        iou = inter / tf.maximum(union, 1e-12)
        final = tf.where(chosen, best, final)
        decayed = current * tf.exp(-(iou * iou) / sigma)
        current = tf.where(chosen, neg_inf, tf.where((current > neg_inf) & live, decayed, current))
        return i + 1, current, final

    start = tf.where(valid, score, neg_inf)
    _, _, final = tf.while_loop(lambda i, *_: i < num_steps, body, (tf.constant(0), start, tf.fill(tf.shape(score), neg_inf)),
                                maximum_iterations=num_slots)
    return valid, final


def _min_max_normalized(x: tf.Tensor, in_video: tf.Tensor) -> tf.Tensor:
    """(x - lo) / (hi - lo) per row over the valid positions, lo and hi the ReLU'd min and max (range <= 0: 1).

    x is first rounded to float32 values. XLA may compute a producer such as the sigmoid once inside the
    reduction and again for the elementwise use, with results that differ in the last float64 bits, so
    x - lo could be a tiny nonzero number at the minimum (and a threshold of 0 would then let it pass in
    one execution mode and not in another). The float32 values of both computations agree.
    """
    x = tf.cast(tf.cast(x, tf.float32), _F64)
    lo = tf.reduce_min(tf.where(in_video, x, tf.constant(math.inf, _F64)), axis=-1, keepdims=True)
    hi = tf.reduce_max(tf.where(in_video, x, tf.constant(-math.inf, _F64)), axis=-1, keepdims=True)
    lo = tf.where(tf.math.is_finite(lo), tf.maximum(lo, 0.0), tf.zeros_like(lo))
    hi = tf.where(tf.math.is_finite(hi), tf.maximum(hi, 0.0), tf.zeros_like(hi))
    delta = hi - lo
    return (x - lo) / tf.where(delta > 0, delta, tf.ones_like(delta))


def _as_stream(name: str, stream: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    missing = [key for key in STREAM_KEYS if key not in stream]
    if missing:
        raise StpnError(f"localize: stream {name!r} lacks {missing}")
    return {key: tf.convert_to_tensor(stream[key]) for key in STREAM_KEYS}


def _check_static(rgb: Mapping[str, tf.Tensor], flow: Mapping[str, tf.Tensor]) -> None:
    for name, stream in (("rgb", rgb), ("flow", flow)):
        ranks = [stream[key].shape.rank for key in STREAM_KEYS]
        if ranks != [2, 3, 2]:
            raise StpnError(f"localize: stream {name!r} needs attention [B, T], tcam [B, T, C], "
                            f"probabilities [B, C]; got ranks {ranks}")
    shapes = [tuple(s[key].shape) for s in (rgb, flow) for key in STREAM_KEYS]
    attention_r, tcam_r, prob_r, attention_f, tcam_f, prob_f = shapes

    def compatible(a, b):
        return a is None or b is None or a == b

    pairs = [(attention_r, tcam_r[:2]), (prob_r, (tcam_r[0], tcam_r[2])), (tcam_r, tcam_f),
             (attention_r, attention_f), (prob_r, prob_f)]
    for a, b in pairs:
        if len(a) != len(b) or not all(compatible(x, y) for x, y in zip(a, b)):
            raise StpnError(f"localize: inconsistent stream shapes {shapes}")
    if tcam_r[2] is None:
        raise StpnError("localize: the number of classes (last tcam dimension) must be static")


def localize(rgb: Mapping[str, tf.Tensor], flow: Mapping[str, tf.Tensor], *, lengths: tf.Tensor,
             num_snippets: tf.Tensor, seconds_per_snippet: tf.Tensor, durations: tf.Tensor | None = None,
             config: LocalizerConfig = LocalizerConfig(),
             settings: Mapping[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
    """Detections for a batch of videos from both streams' outputs.

    Args:
      rgb: {"attention": [B, T], "tcam": [B, T, C] (raw, no bias), "probabilities": [B, C]} float32.
      flow: The same for the flow stream.
      lengths: int32 [B] valid grid positions per video (<= T; 0 gives no detections). Larger values
        are clipped to T in graph mode and rejected eagerly.
      num_snippets: int32 [B] real snippets L per video.
      seconds_per_snippet: float32 [B] stride_frames / fps.
      durations: float32 [B] clip bounds in seconds, or None for L * seconds_per_snippet.
      config: The thresholds, factors, options and bounds (see LocalizerConfig and the module docstring).
      settings: The runtime settings as tensors (`runtime_tensors`); None takes them from `config`. Only
        the structure of `config` (LocalizerConfig.structure) is read when they are given.

    Returns:
      dict with "detection_classes" int32 [B, K] (-1 padding), "detection_scores" float32 [B, K]
      (0 padding), "detection_segments" float32 [B, K, 2] seconds (0 padding), "num_detections" int32 [B].
    """
    outputs, _, _ = _localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                           seconds_per_snippet=seconds_per_snippet, durations=durations, config=config,
                           settings=settings)
    return outputs


def _localize(rgb, flow, *, lengths, num_snippets, seconds_per_snippet, durations, config, settings,
              component_slots: int | None = None, detection_slots: int | None = None, pad_outputs: bool = True):
    """`localize` with optional bounds derived from the data; returns (outputs, overflow, float64 scores).

    component_slots (S < M): components kept per video, stream and class (pooled over the thresholds);
    detection_slots (D <= K): detections kept per video before the outputs are padded back to K slots.
    With them nothing is selected by a top-k cut: the S first components of each row and the D first
    kept detections of each video (in the final order's tie order) are sorted exactly, which is the
    fixed-bound result whenever no row has more than S components and no video more than D detections.
    `overflow` (bool scalar) is True when a derived bound did not hold: the outputs are then wrong and
    the caller runs the fixed bounds (Localizer does). With D = K and more than K detections, the
    fixed-bound top-K selection runs instead (a conditional), so D = K never overflows. With
    `pad_outputs` False the outputs keep D slots (internal callers that merge them).
    """
    if settings is None:
        settings = runtime_tensors(config)
    missing = set(runtime_tensors(config)) - set(settings)
    if missing:
        raise StpnError(f"localize: settings lack {sorted(missing)}")
    thresholds = tf.convert_to_tensor(settings["thresholds"], _F64)
    if thresholds.shape.rank != 1 or thresholds.shape[0] is None or thresholds.shape[0] < 1:
        raise StpnError(f"localize: settings['thresholds'] must be a vector of static length >= 1, got "
                        f"shape {thresholds.shape}")
    num_thresholds = thresholds.shape[0]
    value = lambda name: tf.convert_to_tensor(settings[name], _F64)  # noqa: E731
    class_threshold, alpha, nms_threshold = value("class_threshold"), value("alpha"), value("nms_threshold")
    max_detections = config.max_detections
    max_components_per_class, max_classes_per_video = config.max_components_per_class, config.max_classes_per_video
    interpolation = config.interpolation
    rgb, flow = _as_stream("rgb", rgb), _as_stream("flow", flow)
    _check_static(rgb, flow)
    k = int(interpolation)
    lengths = tf.convert_to_tensor(lengths, tf.int32)
    tcam_rgb = tf.convert_to_tensor(rgb["tcam"])
    num_positions = tf.shape(tcam_rgb)[1]
    if tf.executing_eagerly():
        if bool(tf.reduce_any(lengths > num_positions)) or bool(tf.reduce_any(lengths < 0)):
            raise StpnError(f"localize: lengths must lie in [0, {int(num_positions)}], got {lengths.numpy()}")
    lengths = tf.clip_by_value(lengths, 0, num_positions)
    valid_length = lengths[:, tf.newaxis, tf.newaxis]                                   # [B, 1, 1]

    def classes_first(x):                                                                # [B, T, C] -> [B, C, T]
        return tf.transpose(tf.cast(x, _F64), [0, 2, 1])

    streams = (("rgb", rgb), ("flow", flow))
    a = {name: classes_first(stream["tcam"]) for name, stream in streams}                # [B, C, T]
    probability = {name: tf.cast(stream["probabilities"], _F64) for name, stream in streams}
    kept = {name: probability[name] >= class_threshold for name, _ in streams}          # [B, C]
    total_classes = rgb["tcam"].shape[2]
    batch = tf.shape(lengths)[0]
    if max_classes_per_video is not None and max_classes_per_video < total_classes:
        # Localize only the Q classes with the highest passing probability, in class-index order.
        priority = tf.maximum(tf.where(kept["rgb"], probability["rgb"], -1.0),
                              tf.where(kept["flow"], probability["flow"], -1.0))
        # Probabilities are float32 values, so ranking their float32 casts is exact.
        _, class_ids = tf.math.top_k(tf.cast(priority, tf.float32), k=max_classes_per_video, sorted=False)
        class_ids = tf.sort(class_ids, axis=-1)                                          # [B, Q]
        pick = lambda x: tf.gather(x, class_ids, batch_dims=1, axis=1)  # noqa: E731
        a = {name: pick(x) for name, x in a.items()}
        kept = {name: pick(x) for name, x in kept.items()}
        probability = {name: pick(x) for name, x in probability.items()}
    else:
        class_ids = tf.broadcast_to(tf.range(total_classes)[tf.newaxis, :], [batch, total_classes])
    # Which classes each stream proposes: its own passing classes (both streams), or every class passing
    # in either stream for the one proposing stream (proposal_streams "rgb" / "flow").
    mode = tf.convert_to_tensor(settings["proposal_stream"], tf.int32)
    either = kept["rgb"] | kept["flow"]
    proposing = {name: tf.where(tf.equal(mode, 0), kept[name], either & tf.equal(mode, index + 1))
                 for index, name in enumerate(("rgb", "flow"))}
    mixed = alpha * a["rgb"] + (1.0 - alpha) * a["flow"]
    video_score = (alpha * probability["rgb"] + (1.0 - alpha) * probability["flow"])[..., tf.newaxis]
    in_video = tf.range(tf.shape(mixed)[-1])[tf.newaxis, tf.newaxis, :] < valid_length
    num_classes = mixed.shape[1]

    def rows(x):  # [B, C, X] -> [B, C * P, X], row c * P + p for threshold p
        return x if num_thresholds == 1 else tf.repeat(x, num_thresholds, axis=1)

    row_threshold = tf.tile(thresholds, [num_classes])[tf.newaxis, :, tf.newaxis]        # [1, C * P, 1]
    per_stream = []
    overflow = tf.constant(False)
    m = max_components_per_class if component_slots is None else component_slots
    for name, stream in streams:
        # Broadcast explicitly: with equal shapes TF's graph optimizer does not reorder the products.
        attention = tf.broadcast_to(tf.cast(stream["attention"], _F64)[:, tf.newaxis, :], tf.shape(mixed))
        psi = attention * tf.sigmoid(a[name])
        signal = tf.where(settings["attention_signal"], attention, psi)
        signal = tf.cond(settings["normalize"], lambda: _min_max_normalized(signal, in_video), lambda: signal)
        score_sequence = attention * mixed
        *top, count = _stream_components(
            rows(signal), rows(score_sequence), valid_length, rows(proposing[name][..., tf.newaxis]), rows(video_score),
            threshold=row_threshold, oic=settings["oic"], oic_margin=value("oic_margin"),
            oic_gamma=value("oic_gamma"), k=k, max_components=max_components_per_class, slots=component_slots)
        if component_slots is not None:
            pooled = tf.reduce_sum(tf.reshape(count, [batch, num_classes, num_thresholds]), axis=-1)
            overflow = overflow | tf.reduce_any(pooled > component_slots)
        if num_thresholds > 1:
            # Pool the thresholds of each class, then keep its M best (the threshold index breaks ties).
            top = [tf.reshape(x, [batch, num_classes, num_thresholds * m]) for x in top]
            threshold_index = tf.cast(tf.repeat(tf.range(num_thresholds), m), _F64)
            top.append(tf.broadcast_to(threshold_index, tf.shape(top[1])))
            best = _select_top(top[0], m)
            top = [tf.gather(x, best, batch_dims=2, axis=2) for x in top]
        else:
            top = [*top, tf.zeros_like(top[1])]
        per_stream.append(top)

    # Merge the streams and sort each class's candidates exactly into the NMS order: score descending,
    # then RGB before FLOW, then earlier start, then lower threshold index.
    score, first, last, valid, threshold_index = (tf.concat(parts, -1) for parts in zip(*per_stream))
    num_slots = 2 * m
    if component_slots is not None and num_thresholds == 1:
        # The slots already are in tie order (stream, then start) with the valid ones before the empty
        # ones (score -inf) of their stream, so one stable sort by score is the exact order.
        _, order = tf.math.top_k(score, k=num_slots, sorted=True)
    else:
        stream_index = tf.cast(tf.range(num_slots) // m, _F64)
        span = tf.cast(num_positions, _F64) * k + 1.0
        p = float(num_thresholds)
        # Distinct tie-break keys: (stream, start, threshold) for real candidates, after them the empty slots.
        tiebreak = tf.where(valid, (stream_index * span + first) * p + threshold_index,
                            2.0 * span * p + tf.cast(tf.range(num_slots), _F64))
        order = _exact_order(score, tiebreak)
    score, first, last, valid = (tf.gather(x, order, batch_dims=2, axis=2) for x in (score, first, last, valid))
    if config.nms == "soft":
        keep, score = _soft_nms(score, first, last, valid, sigma=value("soft_nms_sigma"))
    else:
        keep = _greedy_nms(score, first, last, valid, nms_threshold=nms_threshold)

    # Final ranking over all classes of a video: score descending, then class, then the NMS order,
    # which is the order of the class-major flattening (class_ids is ascending).
    flat_score = tf.reshape(tf.where(keep, score, tf.constant(-math.inf, _F64)), [batch, -1])
    flat_first = tf.reshape(first, [batch, -1])
    flat_last = tf.reshape(last, [batch, -1])
    flat_keep = tf.reshape(keep, [batch, -1])
    total = num_classes * num_slots
    kept_count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=[1, 2])                  # [B]

    def select_top_detections():
        # The K best by a top-k cut (float32 keys, see _select_top), then exactly ordered.
        scores, firsts, lasts = flat_score, flat_first, flat_last
        if max_detections > total:
            pad = tf.fill([batch, max_detections - total], tf.constant(-math.inf, _F64))
            scores = tf.concat([scores, pad], -1)
            firsts = tf.concat([firsts, tf.zeros_like(pad)], -1)
            lasts = tf.concat([lasts, tf.zeros_like(pad)], -1)
        top_index = _select_top(scores, max_detections)
        top_score = tf.gather(scores, top_index, batch_dims=1)
        order = _exact_order(top_score, top_index)
        ordered = tf.gather(top_index, order, batch_dims=1)
        return (tf.gather(top_score, order, batch_dims=1), tf.gather(firsts, ordered, batch_dims=1),
                tf.gather(lasts, ordered, batch_dims=1), ordered)

    def compact_detections():
        # The first D kept detections in flattening order (the tie order), then one stable sort by score.
        index = _compact_positions(flat_keep[:, tf.newaxis, :], detection_slots)[:, 0, :]   # [B, D]
        filled = tf.range(detection_slots)[tf.newaxis, :] < kept_count[:, tf.newaxis]
        top_score = tf.where(filled, tf.gather(flat_score, index, batch_dims=1), tf.constant(-math.inf, _F64))
        if num_classes > 1 or config.nms == "soft":  # one class, hard NMS: the NMS order is the final one
            _, order = tf.math.top_k(top_score, k=detection_slots, sorted=True)
            index, top_score = tf.gather(index, order, batch_dims=1), tf.gather(top_score, order, batch_dims=1)
        return (top_score, tf.gather(flat_first, index, batch_dims=1), tf.gather(flat_last, index, batch_dims=1),
                index)

    if detection_slots is None:
        top_score, start, end, top_index = select_top_detections()
        width = max_detections
    elif detection_slots < max_detections:
        top_score, start, end, top_index = compact_detections()
        overflow = overflow | tf.reduce_any(kept_count > detection_slots)
        width = detection_slots
    elif total <= max_detections:
        top_score, start, end, top_index = compact_detections()
        width = detection_slots
    else:
        top_score, start, end, top_index = tf.cond(tf.reduce_max(kept_count) <= max_detections,
                                                   compact_detections, select_top_detections)
        width = max_detections
    num_detections = tf.minimum(kept_count, max_detections)
    slot_valid = tf.range(width)[tf.newaxis, :] < num_detections[:, tf.newaxis]          # [B, width]

    # Padding slots (when K exceeds the candidates) point past the classes; clamp before the lookup.
    class_slot = tf.minimum(top_index // num_slots, num_classes - 1)
    classes = tf.where(slot_valid, tf.gather(class_ids, class_slot, batch_dims=1), -1)
    # The run [start, end] covers grid coordinates [start / k, (end + 1) / k].
    positions = tf.stack([start, end + 1.0], axis=-1)                                    # [B, width, 2]
    column = lambda x: tf.reshape(x, [-1, 1, 1])                                         # noqa: E731
    seconds = timeline.positions_to_seconds_tf(
        positions, interpolation=k, length=column(lengths), num_snippets=column(num_snippets),
        seconds_per_snippet=column(seconds_per_snippet),
        duration=None if durations is None else column(durations))
    seconds = tf.where(slot_valid[..., tf.newaxis], seconds, tf.zeros_like(seconds))
    scores = tf.where(slot_valid, top_score, tf.zeros_like(top_score))
    classes, scores, seconds = tf.cast(classes, tf.int32), tf.cast(scores, tf.float32), tf.cast(seconds, tf.float32)
    if pad_outputs and width < max_detections:  # back to the K output slots (padding values)
        extra = max_detections - width
        classes = tf.pad(classes, [[0, 0], [0, extra]], constant_values=-1)
        scores = tf.pad(scores, [[0, 0], [0, extra]])
        seconds = tf.pad(seconds, [[0, 0], [0, extra], [0, 0]])
    return {
        "detection_classes": classes,
        "detection_scores": scores,
        "detection_segments": seconds,
        "num_detections": num_detections,
    }, overflow, top_score


def component_count_bound(rgb: Mapping, flow: Mapping, lengths, config: LocalizerConfig) -> np.ndarray:
    """An upper bound of the components per video, stream and class, in numpy (the eager first pass).

    The interpolated sequence is linear between grid samples (and past the last one), so every run of
    interpolated positions above a threshold lies in a run of consecutive "knots" above it, the knots
    being the samples 0 .. length - 1 and the extrapolated value at the last interpolated position; runs
    of knots are counted. Rounding differences with the graph are caught there (`_localize`'s overflow).

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


class Localizer(tf.Module):
    """The one postprocessor: stream outputs -> padded detections, as one (XLA-compiled) function.

    Holds a LocalizerConfig; `get_config()` / `from_config()` round-trip it. The export, `stpn localize`,
    the sweep and Beam all localize through this module (inside a SavedModel too: stpn_tf.inference).

    Eager calls (`stpn localize`, the sweep, Beam) derive the bounds from the data, with output identical
    to the configured bounds (see `_localize_rows`); inside a graph (the export's SavedModel, which has
    no eager step) the configured bounds run as they are.

    Args:
      config: The localization settings.
      jit_compile: Compile with XLA (identical results; tests/test_localize.py checks it).
    """

    def __init__(self, config: LocalizerConfig = LocalizerConfig(), *, jit_compile: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        if not isinstance(config, LocalizerConfig):
            raise StpnError(f"Localizer: config must be a LocalizerConfig, got {type(config).__name__}")
        self.config = config
        self.jit_compile = bool(jit_compile)
        self._compiled = tf.function(self._run, jit_compile=self.jit_compile)
        # Eager calls: one function per component-slot bucket over (video, class) rows, and the
        # configured bounds with a class bucket Q' for the batches where a derived bound does not hold.
        self._rows: dict[int | None, tf.types.experimental.PolymorphicFunction] = {}
        self._bucketed: dict[int, tf.types.experimental.PolymorphicFunction] = {}
        self.fallbacks = 0  # eager batches that ran the configured bounds (a derived one did not hold)
        self._runtime: dict[LocalizerConfig, dict[str, tf.Tensor]] = {}

    def _runtime_tensors(self, settings: LocalizerConfig) -> dict[str, tf.Tensor]:
        """`runtime_tensors(settings)`, made once per settings (eager calls)."""
        if settings not in self._runtime:
            if len(self._runtime) > 256:
                self._runtime.clear()
            self._runtime[settings] = runtime_tensors(settings)
        return self._runtime[settings]

    def get_config(self) -> dict:
        return {**self.config.to_dict(), "jit_compile": self.jit_compile}

    @classmethod
    def from_config(cls, config: Mapping) -> "Localizer":
        settings = dict(config)
        jit_compile = settings.pop("jit_compile", True)
        return cls(LocalizerConfig.from_dict(settings), jit_compile=jit_compile)

    def _run(self, rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, settings):
        return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                        seconds_per_snippet=seconds_per_snippet, durations=durations, config=self.config,
                        settings=settings)

    def tracing_count(self) -> int:
        """How many times the functions were traced (compiled): one per structure, input shape and bucket."""
        return self._compiled.experimental_get_tracing_count() + sum(
            f.experimental_get_tracing_count() for f in (*self._rows.values(), *self._bucketed.values()))

    @staticmethod
    def _bucket(needed: int, smallest: int, steps: int = 1) -> int:
        """The smallest of smallest * 2^n * (1 + i / steps), i < steps, that is >= needed."""
        base = smallest
        while True:
            for i in range(steps):
                if base + base * i // steps >= needed:
                    return base + base * i // steps
            base *= 2

    def _rows_function(self, slots: int | None):
        """The compiled function over (video, class) rows with `slots` component slots (None: M)."""
        if slots not in self._rows:
            config = self.config.replace(max_classes_per_video=None)
            m = config.max_components_per_class if slots is None else slots
            detections = min(config.max_detections, 2 * m)

            def run(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, runtime):
                return _localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                 seconds_per_snippet=seconds_per_snippet, durations=durations, config=config,
                                 settings=runtime, component_slots=slots, detection_slots=detections,
                                 pad_outputs=False)

            self._rows[slots] = tf.function(run, jit_compile=self.jit_compile)
        return self._rows[slots]

    def _class_bucket(self, rgb, flow, settings: LocalizerConfig):
        """The configured bounds with a class bound Q' from the data (the fallback of `_localize_rows`).

        When at most Q' < Q classes pass class_threshold in every video of the batch, localizing the
        Q' most probable ones gives identical output; Q' is the smallest of 4, 8, 16, ... that fits.
        """
        total = rgb["tcam"].shape[2]
        bound = self.config.max_classes_per_video or total
        passing = np.zeros(rgb["probabilities"].shape, bool)
        for stream in (rgb, flow):
            passing |= np.asarray(stream["probabilities"], np.float64) >= settings.class_threshold
        bucket = self._bucket(int(passing.sum(axis=1).max(initial=0)), 4)
        if bucket >= bound:
            return self._compiled
        if bucket not in self._bucketed:
            config = self.config.replace(max_classes_per_video=bucket)

            def run(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, runtime):
                return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                seconds_per_snippet=seconds_per_snippet, durations=durations, config=config,
                                settings=runtime)

            self._bucketed[bucket] = tf.function(run, jit_compile=self.jit_compile)
        return self._bucketed[bucket]

    def _localize_rows(self, rgb, flow, lengths, num_snippets, seconds_per_snippet, durations,
                       settings: LocalizerConfig):
        """Eager localization with bounds derived from the data; None when a derived bound does not hold.

        Every (video, class) pair whose class passes class_threshold in a stream (at most Q per video,
        the most probable, as `localize` picks them) becomes one row: a one-class "video" with that
        video's length and timing. The rows are localized in one compiled call with S component slots,
        S >= `component_count_bound` of every row and stream (then the M cut selects nothing) and the
        K cut skipped (a row's detections are its kept candidates in NMS order). Rows are padded to a
        bucket (a few shapes per data set) with empty rows (length 0). The detections of each video are
        then merged in numpy in the final order (float64 score descending, class, NMS order), which is
        exactly `localize`'s output as long as no video has more than K detections and the graph finds
        no row with more than S components; otherwise None (the caller runs the configured bounds).
        Work scales with the passing pairs instead of videos x classes, and no sort over K slots runs.
        """
        streams = [{key: np.asarray(value) for key, value in stream.items()} for stream in (rgb, flow)]
        batch, _, num_classes = streams[0]["tcam"].shape
        max_detections = self.config.max_detections
        kept = [s["probabilities"].astype(np.float64) >= settings.class_threshold for s in streams]
        priority = np.maximum(*(np.where(k, s["probabilities"], -1.0) for k, s in zip(kept, streams)))
        if self.config.max_classes_per_video is not None and self.config.max_classes_per_video < num_classes:
            # The Q most probable passing classes (ties: lower class index), as in `localize`.
            rank = np.argsort(np.argsort(-priority, axis=1, kind="stable"), axis=1, kind="stable")
            selected = (kept[0] | kept[1]) & (rank < self.config.max_classes_per_video)
        else:
            selected = kept[0] | kept[1]
        video, klass = np.nonzero(selected)                                   # rows in (video, class) order
        num_rows = len(video)
        outputs = {"detection_classes": np.full((batch, max_detections), -1, np.int32),
                   "detection_scores": np.zeros((batch, max_detections), np.float32),
                   "detection_segments": np.zeros((batch, max_detections, 2), np.float32),
                   "num_detections": np.zeros(batch, np.int32)}
        if num_rows:
            padded = self._bucket(num_rows, 16, steps=4)
            row_video = np.concatenate([video, np.zeros(padded - num_rows, video.dtype)])
            row_class = np.concatenate([klass, np.zeros(padded - num_rows, klass.dtype)])
            row_length = np.where(np.arange(padded) < num_rows, np.asarray(lengths)[row_video], 0).astype(np.int32)
            rows = [{"attention": s["attention"][row_video],
                     "tcam": s["tcam"][row_video, :, row_class][:, :, np.newaxis],
                     "probabilities": s["probabilities"][row_video, row_class][:, np.newaxis]} for s in streams]
            needed = int(component_count_bound(*rows, row_length, settings).max(initial=0))
            slots = self._bucket(needed, 8)
            slots = slots if slots < self.config.max_components_per_class else None
            pick = lambda x: tf.constant(np.asarray(x)[row_video])  # noqa: E731
            found, overflow, score64 = self._rows_function(slots)(
                *rows, tf.constant(row_length), pick(num_snippets), pick(seconds_per_snippet),
                None if durations is None else pick(durations), self._runtime_tensors(settings))
            if bool(overflow):
                return None
            count = found["num_detections"].numpy()[:num_rows]
            per_video = np.bincount(video, weights=count, minlength=batch).astype(np.int64)
            if per_video.max(initial=0) > max_detections:  # the K cut would apply: the configured path
                return None
            row, slot = np.nonzero(np.arange(score64.shape[1])[np.newaxis, :] < count[:, np.newaxis])
            score = score64.numpy()[row, slot]
            order = np.lexsort((slot, klass[row], -score, video[row]))
            row, slot = row[order], slot[order]
            owner = video[row]
            position = np.arange(len(row)) - (np.cumsum(per_video) - per_video)[owner]
            outputs["detection_classes"][owner, position] = klass[row]
            outputs["detection_scores"][owner, position] = found["detection_scores"].numpy()[row, slot]
            outputs["detection_segments"][owner, position] = found["detection_segments"].numpy()[row, slot]
            outputs["num_detections"] = per_video.astype(np.int32)
        return {key: tf.constant(value) for key, value in outputs.items()}

    def __call__(self, rgb: Mapping[str, tf.Tensor], flow: Mapping[str, tf.Tensor], *, lengths, num_snippets,
                 seconds_per_snippet, durations=None, settings: LocalizerConfig | None = None) -> dict[str, tf.Tensor]:
        """See `localize` for arguments and outputs.

        `settings` replaces the runtime settings (RUNTIME_FIELDS) of this call without a new compile; its
        structure (LocalizerConfig.structure) must be this Localizer's. (Eager calls compile once per
        bucket of the derived bounds: a few per data set, whatever the settings.)
        """
        if settings is None:
            settings = self.config
        elif settings.structure() != self.config.structure():
            raise StpnError(f"Localizer: settings of structure {settings.structure()} given to a Localizer of "
                            f"structure {self.config.structure()} (interpolation, number of thresholds, NMS kind, "
                            "bounds); build a Localizer for them")
        rgb, flow = _as_stream("rgb", rgb), _as_stream("flow", flow)
        lengths = tf.convert_to_tensor(lengths, tf.int32)
        args = (tf.convert_to_tensor(num_snippets, tf.int32), tf.convert_to_tensor(seconds_per_snippet, tf.float32),
                None if durations is None else tf.convert_to_tensor(durations, tf.float32))
        if not tf.executing_eagerly():  # inside a graph (the export): the configured bounds
            return self._compiled(rgb, flow, lengths, *args, runtime_tensors(settings))
        _check_static(rgb, flow)
        positions = rgb["tcam"].shape[1]
        if bool(tf.reduce_any(lengths > positions)) or bool(tf.reduce_any(lengths < 0)):
            raise StpnError(f"Localizer: lengths must lie in [0, {positions}], got {lengths.numpy()}")
        outputs = self._localize_rows(rgb, flow, lengths.numpy(), *args, settings)
        if outputs is None:
            self.fallbacks += 1
            outputs = self._class_bucket(rgb, flow, settings)(rgb, flow, lengths, *args,
                                                              self._runtime_tensors(settings))
        return outputs

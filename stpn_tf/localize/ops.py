"""The tensor ops of STPN localization: the interpolated signal's components (proposals), their scores
(the mean of eq. 7, or outer-inner contrast), the min-max normalisation, exact ordering and top-k
selection. All on batched [B, R, T] tensors, static shapes, no Python loop over videos or classes, so the
same ops run eagerly, under `tf.function` and under XLA with identical results.

How the components are found without materializing the interpolated sequences. Interpolating by k
multiplies the work by k (x24 by default) if done literally. Between grid samples i and i + 1 both psi
and the score sequence are linear in the sub-position r = 0 .. k - 1 (value y_i + d_i * r / k, with d_i
the forward difference, or for the last sample the backward difference: the linear extrapolation). The
positions of one interval where a linear function exceeds the threshold form one contiguous run
touching one end of the interval (a prefix when decreasing, a suffix when increasing, all or nothing when
flat), found from the crossing point; the sum of the score sequence over such a run is an arithmetic
series. So everything is computed per interval, on [B, C, T] tensors, and connected components are
chained across intervals: a run starts a component unless it begins at r = 0 while the previous
interval's run reaches r = k - 1, and it ends a component unless the symmetric condition holds with the
next interval. Each interval thus contains at most one component start and one component end, so a
stream has at most T components per class and they can be indexed by the interval where they end.
"""

from __future__ import annotations

import math

import tensorflow as tf

F64 = tf.float64


def shift_right(x: tf.Tensor, fill) -> tf.Tensor:
    """x[..., i - 1] at position i along the last axis, `fill` at position 0."""
    pad = tf.fill(tf.concat([tf.shape(x)[:-1], [1]], 0), tf.constant(fill, x.dtype))
    return tf.concat([pad, x[..., :-1]], axis=-1)


def shift_left(x: tf.Tensor, fill) -> tf.Tensor:
    """x[..., i + 1] at position i along the last axis, `fill` at the last position."""
    pad = tf.fill(tf.concat([tf.shape(x)[:-1], [1]], 0), tf.constant(fill, x.dtype))
    return tf.concat([x[..., 1:], pad], axis=-1)


def compact_positions(mask: tf.Tensor, num_slots) -> tf.Tensor:
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


def interval_slopes(y: tf.Tensor, valid_length: tf.Tensor) -> tf.Tensor:
    """Per-interval slope d_i of the interpolated sequence (linear extrapolation at the end).

    Args:
      y: [B, C, T] samples.
      valid_length: [B, 1, 1] int32 number of valid samples.

    Returns:
      [B, C, T] float64: y[i+1] - y[i] for i < length - 1; y[i] - y[i-1] for i = length - 1 (0 when
      length is 1). Entries past the valid length are meaningless (callers mask them).
    """
    index = tf.range(tf.shape(y)[-1])[tf.newaxis, tf.newaxis, :]
    forward = shift_left(y, 0.0) - y
    backward = tf.where(index >= 1, y - shift_right(y, 0.0), tf.zeros_like(y))
    return tf.where(index < valid_length - 1, forward, backward)


def stream_components(psi, score_sequence, valid_length, class_kept, video_score, *, threshold, oic, oic_margin,
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
    kf = tf.constant(float(k), F64)
    index = tf.range(tf.shape(psi)[-1])[tf.newaxis, tf.newaxis, :]
    in_video = index < valid_length                                                      # [B, 1, T]

    slope = interval_slopes(psi, valid_length)
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
    score_slope = interval_slopes(score_sequence, valid_length)
    run_sum = count * (kf * score_sequence + score_slope * ((low + high) * 0.5))
    run_sum = tf.where(nonempty, run_sum, tf.zeros_like(run_sum))
    cumulative = tf.cumsum(run_sum, axis=-1)                                             # [B, R, T]

    touches_left = nonempty & tf.equal(low, 0.0)
    touches_right = nonempty & tf.equal(high, kf - 1.0)
    starts = nonempty & ~(touches_left & shift_right(touches_right, False))
    ends = nonempty & ~(touches_right & shift_left(touches_left, False))

    # Component j of a row is its (j + 1)-th start and its (j + 1)-th end (starts and ends alternate).
    num_slots = tf.shape(psi)[-1] if slots is None else slots
    start_interval = compact_positions(starts, num_slots)                               # [B, R, S]
    end_interval = compact_positions(ends, num_slots)
    count = tf.where(class_kept[..., 0], tf.reduce_sum(tf.cast(ends, tf.int32), axis=-1), 0)   # [B, R]
    at = lambda x, i: tf.gather(x, i, batch_dims=2, axis=2)  # noqa: E731
    first = tf.cast(start_interval, F64) * kf + at(low, start_interval)
    last = tf.cast(end_interval, F64) * kf + at(high, end_interval)
    run_total = at(cumulative, end_interval) - at(shift_right(cumulative, 0.0), start_interval)
    mean_score = run_total / (tf.maximum(last - first + 1.0, 1.0) * kf)
    # A conditional, so that the default scoring does not pay for the outer means.
    score = tf.cond(oic, lambda: mean_score - _outer_mean(score_sequence, score_slope, valid_length, first, last,
                                                         oic_margin=oic_margin, k=k) + oic_gamma * video_score,
                    lambda: mean_score)

    valid = tf.range(num_slots)[tf.newaxis, tf.newaxis, :] < count[..., tf.newaxis]
    neg_inf = tf.constant(-math.inf, F64)
    ranked_score = tf.where(valid, score, neg_inf)
    if slots is not None:
        # Derived bound: the caller checks that no row has more than `slots` components (`count`).
        return ranked_score, first, last, valid, count
    # Pad with M invalid slots so that top_k works for any T (also T < M).
    pad_shape = tf.concat([tf.shape(psi)[:-1], [max_components]], 0)
    ranked_score = tf.concat([ranked_score, tf.fill(pad_shape, neg_inf)], -1)
    first = tf.concat([first, tf.zeros(pad_shape, F64)], -1)
    last = tf.concat([last, tf.zeros(pad_shape, F64)], -1)
    valid = tf.concat([valid, tf.zeros(pad_shape, tf.bool)], -1)
    # Selection only (the exact order is established after merging the streams); see select_top.
    top_index = select_top(ranked_score, max_components)
    top_score, top_first, top_last, top_valid = (tf.gather(x, top_index, batch_dims=2, axis=2)
                                                 for x in (ranked_score, first, last, valid))
    return top_score, top_first, top_last, top_valid, count


def _outer_mean(y, slope, valid_length, first, last, *, oic_margin, k):
    """Mean of the interpolated sequence y over the outer margins of runs [first, last] (OIC).

    The margins are [max(0, floor(first - m L)), first) and (last, min(N - 1, floor(last + m L))] with
    L = last - first + 1 and N = length * k interpolated positions; the mean is 0 where both are empty.
    Sums come from prefix sums of the per-interval arithmetic series, as the inner mean.

    Args:
      y, slope: [B, R, T] float64 samples and per-interval slopes (`interval_slopes`).
      valid_length: [B, 1, 1] int32.
      first, last: [B, R, T'] float64 inclusive interpolated positions (any T').
      oic_margin: float64 scalar tensor m.
      k: Interpolation factor (Python int).
    """
    kf = tf.constant(float(k), F64)
    index = tf.range(tf.shape(y)[-1])[tf.newaxis, tf.newaxis, :]
    full = tf.where(index < valid_length, kf * (kf * y + slope * ((kf - 1.0) * 0.5)), tf.zeros_like(y))
    zero = tf.zeros_like(full[..., :1])
    before = tf.concat([zero, tf.cumsum(full, axis=-1)], -1)                             # [B, R, T + 1]
    y_pad, slope_pad = tf.concat([y, zero], -1), tf.concat([slope, zero], -1)
    num_intervals = tf.shape(y)[-1]

    def prefix(j):  # k times the sum of the interpolated values at positions 0 .. j - 1
        interval = tf.clip_by_value(tf.cast(tf.floor(j / kf), tf.int32), 0, num_intervals)
        r = j - tf.cast(interval, F64) * kf
        at = lambda x: tf.gather(x, interval, batch_dims=2, axis=2)  # noqa: E731
        return at(before) + r * (kf * at(y_pad)) + at(slope_pad) * (r * (r - 1.0) * 0.5)

    margin = oic_margin * (last - first + 1.0)
    end = tf.cast(valid_length, F64) * kf - 1.0
    outer_first = tf.maximum(tf.floor(first - margin), 0.0)
    outer_last = tf.minimum(tf.floor(last + margin), end)
    outer_last = tf.maximum(outer_last, last)
    outer_first = tf.minimum(outer_first, first)
    total = prefix(first) - prefix(outer_first) + prefix(outer_last + 1.0) - prefix(last + 1.0)
    count = (first - outer_first) + (outer_last - last)
    return tf.where(count > 0, total / (tf.maximum(count, 1.0) * kf), tf.zeros_like(total))


def select_top(score: tf.Tensor, k: int) -> tf.Tensor:
    """Indices of the k best entries along the last axis (unordered use; ties: lower index).

    XLA on CPU has a fast top-k only for float32 (float64 top-k lowers to a full sort, ~5x slower
    here), so the float64 scores are ranked by their float32 roundings. Rounding is monotone, so the
    selection is exact except between distinct scores that round to the same float32 value exactly
    at the cut-off (relative difference < 6e-8), which only matters when there are more than k
    candidates. The order of the selected entries is then fixed exactly by `exact_order`.
    """
    _, index = tf.math.top_k(tf.cast(score, tf.float32), k=k, sorted=False)
    return index


def exact_order(score: tf.Tensor, tiebreak: tf.Tensor) -> tf.Tensor:
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
    _, by_tiebreak = tf.math.top_k(-tf.cast(tiebreak, F64), k=n, sorted=True)
    _, by_score = tf.math.top_k(tf.gather(score, by_tiebreak, batch_dims=score.shape.rank - 1), k=n, sorted=True)
    return tf.gather(by_tiebreak, by_score, batch_dims=score.shape.rank - 1)



def min_max_normalized(x: tf.Tensor, in_video: tf.Tensor) -> tf.Tensor:
    """(x - lo) / (hi - lo) per row over the valid positions, lo and hi the ReLU'd min and max (range <= 0: 1).

    x is first rounded to float32 values. XLA may compute a producer such as the sigmoid once inside the
    reduction and again for the elementwise use, with results that differ in the last float64 bits, so
    x - lo could be a tiny nonzero number at the minimum (and a threshold of 0 would then let it pass in
    one execution mode and not in another). The float32 values of both computations agree.
    """
    x = tf.cast(tf.cast(x, tf.float32), F64)
    lo = tf.reduce_min(tf.where(in_video, x, tf.constant(math.inf, F64)), axis=-1, keepdims=True)
    hi = tf.reduce_max(tf.where(in_video, x, tf.constant(-math.inf, F64)), axis=-1, keepdims=True)
    lo = tf.where(tf.math.is_finite(lo), tf.maximum(lo, 0.0), tf.zeros_like(lo))
    hi = tf.where(tf.math.is_finite(hi), tf.maximum(hi, 0.0), tf.zeros_like(hi))
    delta = hi - lo
    return (x - lo) / tf.where(delta > 0, delta, tf.ones_like(delta))

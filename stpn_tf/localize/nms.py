"""Per-class NMS over candidates sorted by the NMS order: greedy hard NMS (the paper) and Gaussian
soft-NMS, as bounded while loops (identical eagerly and under XLA)."""

from __future__ import annotations

import math

import tensorflow as tf

from stpn_tf.localize.ops import F64


def greedy_nms(score, first, last, valid, *, nms_threshold):
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


def soft_nms(score, first, last, valid, *, sigma):
    """Gaussian soft-NMS per class over candidates already sorted by the NMS order.

    Repeatedly takes the remaining candidate with the highest current score (ties: earliest in the NMS
    order), keeps it with that score, and multiplies the current score of every remaining candidate of
    the same video and class by exp(-tIoU^2 / sigma). Every valid candidate is kept; its score is the
    decayed one. (Scores are multiplied, so a negative score moves towards 0.)

    Args:
      score, first, last, valid: [B, C, N] as for `greedy_nms`.
      sigma: float64 scalar tensor.

    Returns:
      (keep [B, C, N] bool, decayed score [B, C, N] float64 (-inf where not kept)).
    """
    num_slots = score.shape[-1]
    num_steps = tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1))
    begin, finish = first, last + 1.0
    neg_inf = tf.constant(-math.inf, F64)
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

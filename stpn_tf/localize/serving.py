"""The Localizer inside a graph (the export's SavedModel, Beam, any TensorFlow client): derived bounds in-graph.

A SavedModel has no eager step, so the numpy first pass of the eager Localizer (`bounds.py`, the row
dispatch and merge of `Localizer._localize_rows`) is restated here in TensorFlow ops. The dynamic-shape
part (which (video, class) pairs pass, gathering them as rows, the component bound, the merge of the
rows' detections) runs as plain graph ops; only the per-row localization runs XLA-compiled, on row counts
padded to buckets (stpn_tf.core.buckets), and `tf.switch_case` picks the compiled function of the
component-slot bucket the data needs (the merge after the switch serves every branch: one copy of it in the
graph). A derived bound that does not hold (a row with more components than its slots, a float32 tie across
a video's K cut) makes `tf.cond` run the configured bounds instead, so the output is the configured graph's
whatever the data, and identical to the eager Localizer's.

No py_function, no string ops, no host callbacks: the graph loads bare with `tf.saved_model.load`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from stpn_tf.core.buckets import buckets_up_to
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.localize.ops import F64, min_max_normalized

_LARGEST = 2 ** 30  # no row count or chunk in a graph call comes near it


def first_bucket_at_least(needed: tf.Tensor, table: Sequence[int]) -> tf.Tensor:
    """The first entry of the ascending `table` that is >= `needed` (int32 scalar), as `bucket` gives it."""
    table = tf.constant(list(table), tf.int32)
    index = tf.minimum(tf.reduce_sum(tf.cast(table < needed, tf.int32)), tf.size(table) - 1)
    return tf.gather(table, index)


def largest_power_of_two_at_most(n: tf.Tensor) -> tf.Tensor:
    """2^floor(log2(n)) for n >= 1 (int32 scalar), without floating point."""
    table = tf.constant(buckets_up_to(_LARGEST), tf.int32)
    return tf.gather(table, tf.maximum(tf.reduce_sum(tf.cast(table <= n, tf.int32)) - 1, 0))


def selected_pairs(rgb: Mapping[str, tf.Tensor], flow: Mapping[str, tf.Tensor], *, class_threshold: float,
                   max_classes_per_video: int | None) -> tf.Tensor:
    """bool [B, C]: the (video, class) pairs that `localize` localizes (passing in a stream, the Q most
    probable of a video), as `Localizer._localize_rows` selects them."""
    probability = [tf.cast(s["probabilities"], F64) for s in (rgb, flow)]
    kept = [p >= class_threshold for p in probability]
    num_classes = rgb["probabilities"].shape[-1]
    selected = kept[0] | kept[1]
    if max_classes_per_video is not None and max_classes_per_video < num_classes:
        priority = tf.maximum(*(tf.where(k, p, -1.0) for k, p in zip(kept, probability)))
        # Stable rank of -priority (ties: lower class index), as numpy's double argsort.
        order = tf.argsort(priority, axis=1, direction="DESCENDING", stable=True)
        rank = tf.argsort(order, axis=1, stable=True)
        selected = selected & (rank < max_classes_per_video)
    return selected


def row_component_bound(rows: Sequence[Mapping[str, tf.Tensor]], row_length: tf.Tensor,
                        config: LocalizerConfig) -> tf.Tensor:
    """`bounds.component_count_bound` of one-class rows, in TensorFlow: int64 [R, 2], per row and stream.

    Args:
      rows: rgb and flow rows: attention [R, T], tcam [R, T, 1], probabilities [R, 1].
      row_length: int32 [R] valid positions of each row.
      config: The settings (signal, normalisation, thresholds, class threshold, interpolation).
    """
    k = int(config.interpolation)
    length = tf.cast(row_length, tf.int32)
    own = [tf.cast(r["probabilities"][:, 0], F64) >= config.class_threshold for r in rows]
    counts = []
    for index, stream in enumerate(rows):
        if config.proposal_streams == "both":
            kept = own[index]
        elif config.proposal_streams == ("rgb", "flow")[index]:
            kept = own[0] | own[1]
        else:
            counts.append(tf.zeros(tf.shape(length), tf.int64))  # this stream proposes nothing
            continue
        attention = tf.cast(stream["attention"], F64)                                          # [R, T]
        tcam = tf.cast(stream["tcam"][:, :, 0], F64)
        if config.proposal_signal == "attention":
            signal = attention
        else:
            signal = attention / (1.0 + tf.exp(-tcam))
        t = tf.shape(signal)[1]
        inside = tf.range(t)[tf.newaxis, :] < length[:, tf.newaxis]
        if config.normalize:
            signal = min_max_normalized(signal, inside)
        last = tf.gather(signal, tf.maximum(length - 1, 0), batch_dims=1)                     # [R]
        before = tf.gather(signal, tf.maximum(length - 2, 0), batch_dims=1)
        slope = tf.where(length >= 2, last - before, 0.0)
        end = tf.where(length > 0, last + slope * ((k - 1) / k), float("-inf"))
        knots = tf.concat([tf.where(inside, signal, float("-inf")), tf.fill([tf.shape(signal)[0], 1],
                                                                           tf.constant(float("-inf"), F64))], 1)
        knots = tf.where(tf.range(t + 1)[tf.newaxis, :] == length[:, tf.newaxis], end[:, tf.newaxis], knots)
        total = tf.zeros(tf.shape(length), tf.int64)
        for threshold in config.thresholds:
            above = knots > threshold
            starts = tf.logical_and(above[:, 1:], tf.logical_not(above[:, :-1]))
            total += tf.reduce_sum(tf.cast(starts, tf.int64), axis=1) + tf.cast(above[:, 0], tf.int64)
        counts.append(tf.where(kept, total, 0))
    return tf.stack(counts, axis=1)


def _stable_order(score: tf.Tensor, group: tf.Tensor, num_groups: tf.Tensor) -> tf.Tensor:
    """Indices sorting by (group ascending, score descending), ties keeping their input order: numpy's
    lexsort((..., -score, group)) of entries already sorted by group and then by the lesser keys.

    One sort per group (top_k over a [groups, largest group] matrix, -inf padded) instead of one over
    every entry: a video's detections, not the split's.
    """
    group = tf.cast(group, tf.int32)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(group), group, num_groups)
    starts = tf.cumsum(counts, exclusive=True)
    width = tf.reduce_max(tf.concat([counts, [0]], 0))
    where = tf.stack([group, tf.range(tf.shape(group)[0]) - tf.gather(starts, group)], axis=1)
    matrix = tf.tensor_scatter_nd_update(tf.fill([num_groups, width], tf.constant(float("-inf"), score.dtype)),
                                         where, score)
    # top_k is stable: equal scores (and the -inf padding, after the entries) keep the lower index first.
    _, top = tf.math.top_k(matrix, k=width, sorted=True)
    valid = tf.range(width)[tf.newaxis, :] < counts[:, tf.newaxis]
    return tf.boolean_mask(starts[:, tf.newaxis] + top, valid)


def merge_rows(count: tf.Tensor, scores32: tf.Tensor, segments: tf.Tensor, score64: tf.Tensor, video: tf.Tensor,
               klass: tf.Tensor, *, batch: tf.Tensor, max_detections: int, detections_per_video=0):
    """The rows' detections merged per video into the outputs of `localize` (Localizer._localize_rows's
    numpy merge, as graph ops).

    Args:
      count: int32 [R] detections of each row; scores32 float32 [R, D], segments float32 [R, D, 2],
        score64 float64 [R, D]: the rows' detections in NMS order (the row function's outputs).
      video, klass: int [R] each row's video and class, rows in (video, class) order.
      batch: B; max_detections: K.
      detections_per_video: N > 0 keeps each video's N best (int or int32 scalar; 0: up to K), as the
        eager merge does after the K cut (the rows were cut to N already).

    Returns:
      (outputs as `localize` returns them, tie: bool scalar, True when two candidates tie in float32
      across a video's K cut, so that the configured bounds must decide).
    """
    count = tf.cast(count, tf.int32)
    video = tf.cast(video, tf.int32)
    klass = tf.cast(klass, tf.int32)
    per_video = tf.math.unsorted_segment_sum(count, video, batch)                               # [B]
    width = tf.shape(score64)[1]
    found = tf.where(tf.range(width)[tf.newaxis, :] < count[:, tf.newaxis])                    # [N, 2]
    row, slot = tf.cast(found[:, 0], tf.int32), tf.cast(found[:, 1], tf.int32)
    score = tf.gather_nd(score64, found)

    def starts(counts):
        return tf.cumsum(counts) - counts

    def cut():
        # The K cut of `localize` (float32 keys, ops.select_top); a float32 tie across it: the configured path.
        rounded = tf.cast(score, tf.float32)
        key = _stable_order(rounded, tf.gather(video, row), batch)
        owner = tf.gather(video, tf.gather(row, key))
        rank = tf.range(tf.shape(key)[0]) - tf.gather(starts(per_video), owner)
        ordered = tf.gather(rounded, key)
        at_cut = tf.where(rank == max_detections)[:, 0]
        tie = tf.reduce_any(tf.gather(ordered, at_cut) == tf.gather(ordered, at_cut - 1))
        inside = tf.sort(tf.boolean_mask(key, rank < max_detections))
        return (tf.gather(row, inside), tf.gather(slot, inside), tf.gather(score, inside),
                tf.minimum(per_video, max_detections), tie)

    def no_cut():
        return row, slot, score, per_video, tf.constant(False)

    row, slot, score, per_video, tie = tf.cond(tf.reduce_max(tf.concat([per_video, [0]], 0)) > max_detections,
                                               cut, no_cut)
    order = _stable_order(score, tf.gather(video, row), batch)
    row, slot = tf.gather(row, order), tf.gather(slot, order)
    owner = tf.gather(video, row)
    position = tf.range(tf.shape(row)[0]) - tf.gather(starts(per_video), owner)
    cap = tf.convert_to_tensor(detections_per_video, tf.int32)
    inside = (cap <= 0) | (position < cap)
    row, slot, owner, position = (tf.boolean_mask(x, inside) for x in (row, slot, owner, position))
    per_video = tf.where(cap > 0, tf.minimum(per_video, cap), per_video)
    where = tf.stack([owner, position], axis=1)
    at = tf.stack([row, slot], axis=1)
    k = max_detections
    outputs = {
        "detection_classes": tf.tensor_scatter_nd_update(tf.fill([batch, k], -1), where, tf.gather(klass, row)),
        "detection_scores": tf.tensor_scatter_nd_update(tf.zeros([batch, k], tf.float32), where,
                                                        tf.gather_nd(scores32, at)),
        "detection_segments": tf.tensor_scatter_nd_update(tf.zeros([batch, k, 2], tf.float32), where,
                                                          tf.gather_nd(segments, at)),
        "num_detections": per_video,
    }
    return outputs, tie


@tf.autograph.experimental.do_not_convert  # explicit tf.cond / switch_case / map_fn; converting costs seconds
def localize_in_graph(rgb: Mapping[str, tf.Tensor], flow: Mapping[str, tf.Tensor], *, lengths: tf.Tensor,
                      num_snippets: tf.Tensor, seconds_per_snippet: tf.Tensor, durations: tf.Tensor,
                      config: LocalizerConfig, settings: LocalizerConfig, runtime: Mapping[str, tf.Tensor],
                      rows_function: Callable[[int | None], Callable], configured: Callable,
                      row_elements: int) -> dict[str, tf.Tensor]:
    """`localize`'s outputs with bounds derived from the data, as graph ops (see the module docstring).

    Args:
      rgb, flow: Stream tensors as for `graph.localize`; lengths, num_snippets, seconds_per_snippet,
        durations: [B] as there (the Localizer passes NaN for durations not given, never None).
      config: The Localizer's structure (bounds, interpolation, thresholds count, NMS kind).
      settings: This call's settings (its runtime fields are read as Python values for the bounds).
      runtime: `graph.runtime_tensors(settings)`.
      rows_function: slots (an int < M, or None for M) -> the compiled function over (video, class) rows
        (Localizer's, the same the eager path calls).
      configured: The configured graph, called as the eager Localizer calls it (the fallback).
      row_elements: Rows x interpolated positions x thresholds per compiled call (Localizer.row_elements).

    Returns:
      The outputs of `graph.localize`.
    """
    lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, tf.shape(rgb["tcam"])[1])  # as `localize` clips
    batch = tf.shape(lengths)[0]
    selected = selected_pairs(rgb, flow, class_threshold=settings.class_threshold,
                              max_classes_per_video=config.max_classes_per_video)
    pairs = tf.cast(tf.where(selected), tf.int32)                                  # [R, 2], (video, class) order
    video, klass = pairs[:, 0], pairs[:, 1]
    num_rows = tf.shape(video)[0]
    # Chunks of at most `chunk` rows (row_elements / positions, a power of two), the rows padded to a
    # bucket (one chunk) or to whole chunks: the row counts of `_localize_rows`.
    positions = tf.shape(rgb["tcam"])[1] * int(config.interpolation) * len(config.thresholds)
    chunk = largest_power_of_two_at_most(tf.maximum(1, row_elements // tf.maximum(1, positions)))
    padded = first_bucket_at_least(num_rows, buckets_up_to(_LARGEST, 16, steps=4))
    whole = (num_rows + chunk - 1) // chunk * chunk
    padded, chunk = tf.where(padded > chunk, whole, padded), tf.where(padded > chunk, chunk, padded)
    extra = padded - num_rows

    def pad(x, value=0):  # padding rows: length 0, so no detections; timing 1 (no division by 0)
        paddings = tf.concat([[[0, extra]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], 0)
        return tf.pad(x, paddings, constant_values=value)

    def stream_rows(stream):
        tcam = tf.gather_nd(tf.transpose(stream["tcam"], [0, 2, 1]), pairs)                      # [R, T]
        return {"attention": pad(tf.gather(stream["attention"], video)), "tcam": pad(tcam)[:, :, tf.newaxis],
                "probabilities": pad(tf.gather_nd(stream["probabilities"], pairs))[:, tf.newaxis]}

    rows = [stream_rows(rgb), stream_rows(flow)]
    row_length = pad(tf.gather(lengths, video))
    row_snippets = pad(tf.gather(tf.cast(num_snippets, tf.int32), video), 1)
    row_sps = pad(tf.gather(tf.cast(seconds_per_snippet, tf.float32), video), 1.0)
    row_durations = pad(tf.gather(tf.cast(durations, tf.float32), video), 1.0)
    counts = row_component_bound(rows, row_length, settings)                                 # [P, 2]
    needed = tf.reduce_max(tf.concat([tf.reshape(counts, [-1]), tf.zeros([1], tf.int64)], 0))
    # Rows with few components first (as the eager path orders them): the NMS loop of a call stops after
    # its largest valid count, so a chunk of sparse rows does not pay for the busiest row of the split.
    order = tf.concat([tf.argsort(tf.reduce_sum(counts[:num_rows], axis=1), stable=True),
                       tf.range(num_rows, padded)], 0)
    unsort = tf.math.invert_permutation(order)
    rows = [{key: tf.gather(value, order) for key, value in r.items()} for r in rows]
    row_length, row_snippets, row_sps, row_durations = (tf.gather(x, order) for x in (
        row_length, row_snippets, row_sps, row_durations))

    widest = min(config.max_detections, 2 * config.max_components_per_class)

    def run(slots):
        function = rows_function(slots)
        chunks = padded // chunk

        def split(x):
            return tf.reshape(x, tf.concat([[chunks, chunk], tf.shape(x)[1:]], 0))

        timing = [split(row_snippets), split(row_sps), split(row_durations)]
        inputs = ([{key: split(value) for key, value in r.items()} for r in rows], split(row_length), timing)

        def one_chunk(part):
            streams, length, (snippets, sps, clip) = part
            found, overflow, score64 = function(*streams, length, snippets, sps, clip, runtime)
            return (found["num_detections"], found["detection_scores"], found["detection_segments"], score64,
                    overflow)

        width = min(config.max_detections, 2 * (config.max_components_per_class if slots is None else slots))
        signature = (tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, width], tf.float32),
                     tf.TensorSpec([None, width, 2], tf.float32), tf.TensorSpec([None, width], F64),
                     tf.TensorSpec([], tf.bool))
        # One chunk at a time: the chunk bounds the memory of a call, as in the eager path.
        count, scores32, segments, score64, overflow = tf.map_fn(
            one_chunk, inputs, fn_output_signature=signature, parallel_iterations=1)

        def widen(x):  # [chunks, chunk, width, ...] -> the widest branch's width (slots past a row's count)
            extra = [[0, 0]] * (len(x.shape) - 3)
            return tf.pad(x, [[0, 0], [0, 0], [0, widest - width], *extra]) if width < widest else x

        return count, widen(scores32), widen(segments), widen(score64), tf.reduce_any(overflow)

    slot_buckets = buckets_up_to(config.max_components_per_class - 1, 8)  # the slots < M; past them: M
    branches = [*slot_buckets, None]
    if len(branches) == 1:
        count, scores32, segments, score64, overflow = run(None)
    else:
        index = tf.reduce_sum(tf.cast(tf.constant(slot_buckets, tf.int64) < needed, tf.int32))
        count, scores32, segments, score64, overflow = tf.switch_case(
            index, [lambda s=s: run(s) for s in branches])

    # One merge after the slot switch. It reads only the first `count` slots of each row, and a row (one video,
    # one class) never counts more than its branch's width, min(K, 2 x slots): the widened branches give the
    # outputs their own widths gave.
    def flat(x):  # [chunks, chunk, ...] -> [R, ...] in (video, class) order
        return tf.gather(tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0)), unsort)[:num_rows]

    outputs, tie = merge_rows(flat(count), flat(scores32), flat(segments), flat(score64), video, klass,
                              batch=batch, max_detections=config.max_detections,
                              detections_per_video=runtime.get("detections_per_video", 0))
    failed = overflow | tie

    def fallback():
        return dict(configured(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, runtime))

    return tf.cond(failed, fallback, lambda: outputs)

"""The configured localization graph: STPN localization (spec section 3) with static output shapes.

`localize` turns both streams' outputs for a batch of videos into a fixed number of padded detections.
It has no Python loop over videos or classes, no host callbacks and no string ops; the same function
runs eagerly, under `tf.function` and under `tf.function(jit_compile=True)` with identical results.
`stpn_tf.localize.reference` is the plain numpy statement of the same algorithm that the tests compare
against; the conventions listed there (float64 arithmetic, strict thresholding, tIoU > nms_threshold
suppresses, tie orders) hold here too. The ops are in `ops.py` and `nms.py`; the Localizer module
(`localizer.py`) runs this graph compiled.

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
`ops.select_top`); only candidates whose float64 scores differ by less than float32 rounding exactly at
the cut could be exchanged relative to the reference. All orderings are exact in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.localize import timeline
from stpn_tf.localize.checks import STREAM_KEYS, check_keys, check_lengths, check_shapes
from stpn_tf.localize.config import PROPOSAL_STREAMS, LocalizerConfig
from stpn_tf.localize.nms import greedy_nms, soft_nms
from stpn_tf.localize.ops import F64, compact_positions, exact_order, min_max_normalized, select_top, stream_components


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
        "soft_nms": tf.constant(config.nms == "soft"),
        "soft_nms_sigma": f64(config.soft_nms_sigma),
        "min_score": f64(config.min_score),
        "detections_per_video": tf.constant(int(config.detections_per_video), tf.int32),
    }


def as_stream(name: str, stream: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The stream's STREAM_KEYS entries as tensors (raises when one is missing)."""
    check_keys(name, stream)
    return {key: tf.convert_to_tensor(stream[key]) for key in STREAM_KEYS}


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
      durations: float32 [B] clip bounds in seconds, or None (or NaN entries) for L * seconds_per_snippet.
      config: The thresholds, factors, options and bounds (see LocalizerConfig and the module docstring).
      settings: The runtime settings as tensors (`runtime_tensors`); None takes them from `config`. Only
        the structure of `config` (LocalizerConfig.structure) is read when they are given.

    Returns:
      dict with "detection_classes" int32 [B, K] (-1 padding), "detection_scores" float32 [B, K]
      (0 padding), "detection_segments" float32 [B, K, 2] seconds (0 padding), "num_detections" int32 [B].
    """
    outputs, _, _ = localize_with_bounds(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                         seconds_per_snippet=seconds_per_snippet, durations=durations,
                                         config=config, settings=settings)
    return outputs


def localize_with_bounds(rgb, flow, *, lengths, num_snippets, seconds_per_snippet, durations, config, settings,
                         component_slots: int | None = None, detection_slots: int | None = None,
                         pad_outputs: bool = True):
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
    thresholds = tf.convert_to_tensor(settings["thresholds"], F64)
    if thresholds.shape.rank != 1 or thresholds.shape[0] is None or thresholds.shape[0] < 1:
        raise StpnError(f"localize: settings['thresholds'] must be a vector of static length >= 1, got "
                        f"shape {thresholds.shape}")
    num_thresholds = thresholds.shape[0]
    value = lambda name: tf.convert_to_tensor(settings[name], F64)  # noqa: E731
    class_threshold, alpha, nms_threshold = value("class_threshold"), value("alpha"), value("nms_threshold")
    max_detections = config.max_detections
    max_components_per_class, max_classes_per_video = config.max_components_per_class, config.max_classes_per_video
    interpolation = config.interpolation
    rgb, flow = as_stream("rgb", rgb), as_stream("flow", flow)
    check_shapes(rgb, flow)
    k = int(interpolation)
    lengths = tf.convert_to_tensor(lengths, tf.int32)
    tcam_rgb = tf.convert_to_tensor(rgb["tcam"])
    num_positions = tf.shape(tcam_rgb)[1]
    if tf.executing_eagerly():
        check_lengths(lengths.numpy(), int(num_positions), caller="localize")
    lengths = tf.clip_by_value(lengths, 0, num_positions)
    valid_length = lengths[:, tf.newaxis, tf.newaxis]                                   # [B, 1, 1]

    def classes_first(x):                                                                # [B, T, C] -> [B, C, T]
        return tf.transpose(tf.cast(x, F64), [0, 2, 1])

    streams = (("rgb", rgb), ("flow", flow))
    a = {name: classes_first(stream["tcam"]) for name, stream in streams}                # [B, C, T]
    probability = {name: tf.cast(stream["probabilities"], F64) for name, stream in streams}
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
        attention = tf.broadcast_to(tf.cast(stream["attention"], F64)[:, tf.newaxis, :], tf.shape(mixed))
        psi = attention * tf.sigmoid(a[name])
        signal = tf.where(settings["attention_signal"], attention, psi)
        signal = tf.cond(settings["normalize"], lambda: min_max_normalized(signal, in_video), lambda: signal)
        score_sequence = attention * mixed
        *top, count = stream_components(
            rows(signal), rows(score_sequence), valid_length, rows(proposing[name][..., tf.newaxis]), rows(video_score),
            threshold=row_threshold, oic=settings["oic"], oic_margin=value("oic_margin"),
            oic_gamma=value("oic_gamma"), k=k, max_components=max_components_per_class, slots=component_slots)
        if component_slots is not None:
            pooled = tf.reduce_sum(tf.reshape(count, [batch, num_classes, num_thresholds]), axis=-1)
            overflow = overflow | tf.reduce_any(pooled > component_slots)
        if num_thresholds > 1:
            # Pool the thresholds of each class, then keep its M best (the threshold index breaks ties).
            top = [tf.reshape(x, [batch, num_classes, num_thresholds * m]) for x in top]
            threshold_index = tf.cast(tf.repeat(tf.range(num_thresholds), m), F64)
            top.append(tf.broadcast_to(threshold_index, tf.shape(top[1])))
            best = select_top(top[0], m)
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
        stream_index = tf.cast(tf.range(num_slots) // m, F64)
        span = tf.cast(num_positions, F64) * k + 1.0
        p = float(num_thresholds)
        # Distinct tie-break keys: (stream, start, threshold) for real candidates, after them the empty slots.
        tiebreak = tf.where(valid, (stream_index * span + first) * p + threshold_index,
                            2.0 * span * p + tf.cast(tf.range(num_slots), F64))
        order = exact_order(score, tiebreak)
    score, first, last, valid = (tf.gather(x, order, batch_dims=2, axis=2) for x in (score, first, last, valid))
    # The NMS kind is a runtime setting: both loops are in the graph, one runs.
    keep, score = tf.cond(settings["soft_nms"],
                          lambda: soft_nms(score, first, last, valid, sigma=value("soft_nms_sigma")),
                          lambda: (greedy_nms(score, first, last, valid, nms_threshold=nms_threshold), score))
    keep = keep & (score >= value("min_score"))  # -inf (the default) keeps every one

    # Final ranking over all classes of a video: score descending, then class, then the NMS order,
    # which is the order of the class-major flattening (class_ids is ascending).
    flat_score = tf.reshape(tf.where(keep, score, tf.constant(-math.inf, F64)), [batch, -1])
    flat_first = tf.reshape(first, [batch, -1])
    flat_last = tf.reshape(last, [batch, -1])
    flat_keep = tf.reshape(keep, [batch, -1])
    total = num_classes * num_slots
    kept_count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=[1, 2])                  # [B]

    def select_top_detections():
        # The K best by a top-k cut (float32 keys, see select_top), then exactly ordered.
        scores, firsts, lasts = flat_score, flat_first, flat_last
        if max_detections > total:
            pad = tf.fill([batch, max_detections - total], tf.constant(-math.inf, F64))
            scores = tf.concat([scores, pad], -1)
            firsts = tf.concat([firsts, tf.zeros_like(pad)], -1)
            lasts = tf.concat([lasts, tf.zeros_like(pad)], -1)
        top_index = select_top(scores, max_detections)
        top_score = tf.gather(scores, top_index, batch_dims=1)
        order = exact_order(top_score, top_index)
        ordered = tf.gather(top_index, order, batch_dims=1)
        return (tf.gather(top_score, order, batch_dims=1), tf.gather(firsts, ordered, batch_dims=1),
                tf.gather(lasts, ordered, batch_dims=1), ordered)

    def compact_detections():
        # The first D kept detections in flattening order (the tie order), then one stable sort by score.
        index = compact_positions(flat_keep[:, tf.newaxis, :], detection_slots)[:, 0, :]   # [B, D]
        filled = tf.range(detection_slots)[tf.newaxis, :] < kept_count[:, tf.newaxis]
        top_score = tf.where(filled, tf.gather(flat_score, index, batch_dims=1), tf.constant(-math.inf, F64))
        # A stable sort (top_k keeps the lower index first among equal scores); with one class and hard NMS
        # the NMS order already is the final one, and sorting it again leaves it as it is.
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
    # detections_per_video N > 0 keeps the N best (a prefix of the final order); 0 keeps up to K.
    cap = tf.convert_to_tensor(settings["detections_per_video"], tf.int32)
    num_detections = tf.minimum(kept_count, tf.where(cap > 0, tf.minimum(cap, max_detections), max_detections))
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

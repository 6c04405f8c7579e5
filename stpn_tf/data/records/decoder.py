"""The decoder: one serialized video record -> a dict of namespaced tensors (graph-safe).

Kept apart from the parser that turns decoded records into model inputs (stpn_tf.data.pipeline) and from
the export's serving graph (stpn_tf.inference.module), which both call `parse_example`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from stpn_tf.data.records.schema import FEATURE_SPEC


def check(condition: tf.Tensor, message: str, *data: tf.Tensor):
    """tf.debugging.Assert whose error message starts with `message` followed by the given values.

    Returns None when run eagerly and the condition holds, else the assert op to depend on.
    """
    return tf.debugging.Assert(condition, [message, *data], summarize=16)


def _decode_stream(raw: tf.Tensor, name: str, video_id: tf.Tensor, num_snippets: tf.Tensor,
                   feature_dim: int) -> tf.Tensor:
    """Decodes raw float32 bytes into [L, D], failing with a named error on a length mismatch."""
    flat = tf.io.decode_raw(raw, tf.float32, little_endian=True)
    expected = num_snippets * feature_dim
    found = tf.size(flat, out_type=tf.int32)
    assertion = check(tf.equal(found, expected),
                      f"{name} holds a number of float32 values different from video/num_snippets * "
                      f"feature_dim (feature_dim={feature_dim}); video id, values found, values expected:",
                      video_id, found, expected)
    # In graph mode (Dataset.map) the assert must be tied to the output so it runs before reshape.
    with tf.control_dependencies([assertion] if assertion is not None else []):
        return tf.reshape(flat, [-1, feature_dim])


def parse_example(serialized: tf.Tensor, *, num_classes: int, feature_dim: int,
                  streams: Sequence[str] = ("rgb", "flow")) -> dict[str, tf.Tensor]:
    """Parses one serialized video example; works eagerly and inside `Dataset.map`.

    Args:
      serialized: scalar tf.string, one record written by `make_example` (stpn_tf.data.records.schema).
      num_classes: C, length of the multi-hot label vector.
      feature_dim: D per stream, static so the outputs have a static last dimension.
      streams: which of "rgb" / "flow" to decode; a one-stream training pipeline skips the other's
        copy (its "video/<stream>" key is then absent).

    Returns:
      A dict with "video/id" tf.string [], "video/subset" tf.string [], "video/num_snippets" int32 [],
      "video/rgb" float32 [L, D], "video/flow" float32 [L, D], "video/labels" float32 [C] (multi-hot),
      "video/duration" float32 [], "video/seconds_per_snippet" float32 [] (stride_frames / fps).

    Raises:
      tf.errors.InvalidArgumentError (when the value is evaluated) if the stored feature dimension
      differs from `feature_dim`, a stream's byte length is not num_snippets * feature_dim * 4, or a
      label index is outside [0, num_classes).
    """
    unknown = set(streams) - {"rgb", "flow"}
    if unknown or not streams:
        raise ValueError(f"streams must be a non-empty subset of ('rgb', 'flow'), got {streams!r}")
    # Leaving the other stream out of the spec skips copying its bytes, not only decoding them.
    spec = {k: v for k, v in FEATURE_SPEC.items() if k not in ("video/rgb", "video/flow") or k[6:] in streams}
    parsed = tf.io.parse_single_example(serialized, spec)
    video_id = parsed["video/id"]
    num_snippets = tf.cast(parsed["video/num_snippets"], tf.int32)
    stored_dim = tf.cast(parsed["video/feature_dim"], tf.int32)
    label_ids = tf.cast(parsed["video/labels"].values, tf.int32)
    checks = [
        check(tf.equal(stored_dim, feature_dim),
              f"video/feature_dim stored in the record differs from the feature_dim={feature_dim} "
              "asked for; video id and stored value:", video_id, stored_dim),
        check(num_snippets > 0, "video/num_snippets must be >= 1; video id:", video_id),
        check(tf.reduce_all(label_ids < num_classes),
              f"video/labels holds a class index >= num_classes={num_classes}; video id and labels:",
              video_id, label_ids),
        check(tf.reduce_all(label_ids >= 0),
              "video/labels holds a negative class index; video id and labels:", video_id, label_ids),
    ]
    checks = [c for c in checks if c is not None]  # eager asserts return None after passing
    with tf.control_dependencies(checks):
        decoded = {f"video/{s}": _decode_stream(parsed[f"video/{s}"], f"video/{s}", video_id, num_snippets,
                                                feature_dim) for s in ("rgb", "flow") if s in streams}
        # Sum of one-hot rows; labels are unique by construction, the minimum guards hand-made records.
        multi_hot = tf.minimum(
            tf.reduce_sum(tf.one_hot(label_ids, num_classes, dtype=tf.float32), axis=0), 1.0)
    stride = tf.cast(parsed["video/stride_frames"], tf.float32)
    return {
        "video/id": video_id,
        "video/subset": parsed["video/subset"],
        "video/num_snippets": num_snippets,
        **decoded,
        "video/labels": multi_hot,
        "video/duration": parsed["video/duration"],
        # One snippet covers stride_frames / fps seconds (spec §3 step 8); stpn_tf.localize.timeline does
        # the index -> seconds conversion, this is only the per-video constant it needs.
        "video/seconds_per_snippet": stride / parsed["video/fps"],
    }

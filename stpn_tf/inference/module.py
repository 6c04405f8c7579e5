"""The composed inference graph: real snippets -> test grid -> STPN streams -> Localizer -> detections.

`InferenceModule` is what `stpn export` saves and what every other path runs in memory (`stpn localize`
from a work directory, `stpn localize VIDEO`, Beam batch localization, the demo), so they all compute the
same numbers. Its two signatures (load the SavedModel with plain `tf.saved_model.load`; no stpn_tf needed):

`serving_default`
  inputs:  rgb float32 [batch, time, D], flow float32 [batch, time, D] (padded; rows past num_snippets are
           ignored), num_snippets int32 [batch] (real snippets L), seconds_per_snippet float32 [batch]
  outputs: detection_classes int32 [batch, K] (-1 padding), detection_scores float32 [batch, K],
           detection_segments float32 [batch, K, 2] (seconds), num_detections int32 [batch],
           video_probabilities float32 [batch, S, C] (sigmoid of the video logits; one row per stream S,
           rgb then flow), attention float32 [batch, S, T], tcam float32 [batch, S, T, C] (on the grid
           that was localized), grid_length int32 [batch] (valid positions of that grid), num_snippets
           int32 [batch] (L, clipped to time), class_names string [C]
`serve_examples`
  inputs:  examples string [batch], serialized tf.train.Example records of the project's TFRecord
           schema (stpn_tf.data.records); durations in the records clip the segments.
  outputs: the same plus video_id string [batch], seconds_per_snippet float32 [batch], duration float32
           [batch]. With all_snippets the batch's time axis is padded to the next power of two, so that
           the compiled localization sees few distinct shapes.

Inputs that do not fit are refused inside the graph, so every TensorFlow client gets the same check: a
call of `serving_default` with features of another size than D, NaN or infinite features, rgb and flow of
different shapes, `num_snippets` below 1 or beyond the time axis, or a `seconds_per_snippet` that is not a
positive number raises `tf.errors.InvalidArgumentError` whose message starts with `serving_default: <input>`
(the checks are graph ops outside the XLA-compiled localization, which would drop them; the size and timing
checks gate the models; the NaN / infinity checks, one sum per feature input, gate the outputs and run
beside the models and the localization; `bench/localize.py` measures what they cost).

Inside the graph the Localizer derives its bounds from the data as graph ops (stpn_tf.localize.serving),
as `stpn localize` does eagerly: the same detections, byte for byte, at that speed.

Streams: ("rgb", "flow") is the paper's two-stream model; one of ("rgb",), ("flow",), ("joint",) localizes
that stream alone (it then plays both roles of eq. 7, the single-stream score). Both feature inputs are
always present; a joint model reads them concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from stpn_tf.data import grid as grid_lib
from stpn_tf.data.grid import GridConfig
from stpn_tf.core import buckets
from stpn_tf.core.errors import StpnError
from stpn_tf.core.streams import check_streams, stream_roles
from stpn_tf.localize.localizer import Localizer


def model_feature_dim(model) -> int:
    """Input size of a built STPN stream model (rows of its classifier kernel)."""
    try:
        return int(model.classifier.kernel.shape[0])
    except AttributeError as err:
        raise StpnError(f"cannot find the feature dimension of model {getattr(model, 'name', model)!r} "
                        f"({err})") from None


def _bucket(length: tf.Tensor) -> tf.Tensor:
    """The next power of two >= length (>= 1), as int32: stpn_tf.core.buckets.next_power_of_two inside the
    graph, looked up in the table of its buckets (a length past the table is kept as it is)."""
    length = tf.maximum(tf.cast(length, tf.int32), 1)
    table = tf.constant(buckets.buckets_up_to(2 ** 30), tf.int32)
    index = tf.minimum(tf.reduce_sum(tf.cast(table < length, tf.int32)), tf.size(table) - 1)
    return tf.maximum(tf.gather(table, index), length)


def all_finite(x: tf.Tensor) -> tf.Tensor:
    """bool scalar: no NaN or infinity in `x`, at the cost of one sum in the common case.

    A NaN or an infinity makes the sum NaN or infinite, so a finite sum proves every element finite with
    one multi-threaded reduction (CheckNumerics, the op of `assert_all_finite`, is single-threaded and cost
    most of a serving call's checks). Only when the sum is not finite (a bad input, or finite values
    whose sum overflows) is every element tested.
    """
    return tf.cond(tf.math.is_finite(tf.reduce_sum(x)), lambda: tf.constant(True),
                   lambda: tf.reduce_all(tf.math.is_finite(x)))


def check_serving_inputs(rgb, flow, num_snippets, seconds_per_snippet, *, feature_dim: int,
                         name: str = "serving_default"):
    """The inputs, once their sizes and timing are checked, and the check of their values (graph assertions;
    see the module docstring).

    The checks run one after the other in a fixed order, so an input with several faults always gets the
    message of the first. The size and timing checks (on shapes and [batch] vectors) gate the returned
    inputs. The NaN / infinity checks, which read every feature, come after them: `check_values(after)`
    makes them once the tensors `after` exist and returns the op the caller makes its outputs depend on
    (`guarded`). Started after the stream models (whose matrix products use every core), they run beside
    the localization, which leaves a core idle, instead of before everything; a bad value still fails the
    call before any output leaves it.

    Returns:
      (rgb, flow) with the static shape [batch, time, feature_dim], num_snippets, seconds_per_snippet,
      check_values.
    """
    d = int(feature_dim)
    batch = tf.shape(rgb)[0]
    checks = [
        lambda: tf.debugging.assert_equal(tf.shape(rgb)[2], d, summarize=3, message=(
            f"{name}: rgb must have {d} features per snippet (the models' feature size)")),
        lambda: tf.debugging.assert_equal(tf.shape(flow)[2], d, summarize=3, message=(
            f"{name}: flow must have {d} features per snippet (the models' feature size)")),
        lambda: tf.debugging.assert_equal(tf.shape(rgb), tf.shape(flow), summarize=3, message=(
            f"{name}: rgb and flow must have the same shape [batch, time, D]")),
        lambda: tf.debugging.assert_equal(tf.shape(num_snippets)[0], batch, summarize=3, message=(
            f"{name}: num_snippets must have one entry per video of the batch")),
        lambda: tf.debugging.assert_equal(tf.shape(seconds_per_snippet)[0], batch, summarize=3, message=(
            f"{name}: seconds_per_snippet must have one entry per video of the batch")),
        lambda: tf.debugging.assert_greater_equal(num_snippets, 1, summarize=8, message=(
            f"{name}: num_snippets must be >= 1 (a video needs at least one snippet)")),
        lambda: tf.debugging.assert_less_equal(num_snippets, tf.shape(rgb)[1], summarize=8, message=(
            f"{name}: num_snippets must not exceed the time axis of rgb and flow")),
        lambda: tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(seconds_per_snippet) & (seconds_per_snippet > 0)),
            [f"{name}: seconds_per_snippet must be positive and finite (stride_frames / fps); got",
             seconds_per_snippet], summarize=8),
    ]
    previous = []
    for check in checks:
        with tf.control_dependencies(previous):
            previous = [check()]
    with tf.control_dependencies(previous):
        rgb, flow = tf.identity(rgb), tf.identity(flow)
        num_snippets, seconds_per_snippet = tf.identity(num_snippets), tf.identity(seconds_per_snippet)

    def check_values(after=()):
        with tf.control_dependencies(list(after)):
            # Both sums at once; only the assertions are ordered (rgb's message first).
            finite = {"rgb": all_finite(rgb), "flow": all_finite(flow)}
        first = tf.debugging.assert_equal(finite["rgb"], True, message=f"{name}: rgb holds NaN or infinite values")
        with tf.control_dependencies([first]):
            return tf.debugging.assert_equal(finite["flow"], True,
                                             message=f"{name}: flow holds NaN or infinite values")

    return (tf.ensure_shape(rgb, [None, None, d]), tf.ensure_shape(flow, [None, None, d]), num_snippets,
            seconds_per_snippet, check_values)


def guarded(outputs: Mapping[str, tf.Tensor], check) -> dict[str, tf.Tensor]:
    """`outputs`, each available only once `check` (an op) has passed."""
    with tf.control_dependencies([check]):
        return {key: tf.identity(value) for key, value in outputs.items()}


class InferenceModule(tf.Module):
    """Stream models, the test grid and the Localizer as one graph with two signatures.

    Args:
      models: {stream: model}, each called as `model({"features": [B, T, D_s], "mask": [B, T]},
        training=False)` and returning {"attention" [B, T], "tcam" [B, T, C], "video_logits" [B, C]}.
        Keys: "rgb" and "flow", or one of "rgb", "flow", "joint".
      class_names: C names.
      grid: Test grid settings.
      localizer: The postprocessor.
      feature_dim: D per stream; None reads it from the models.
    """

    def __init__(self, models: Mapping[str, object], class_names: Sequence[str], *, grid: GridConfig = GridConfig(),
                 localizer: Localizer | None = None, feature_dim: int | None = None):
        super().__init__(name="stpn_export")
        self.streams = check_streams(tuple(models))
        self.models = {s: models[s] for s in self.streams}  # tracked: the SavedModel holds their variables
        self.class_names = [str(name) for name in class_names]
        self.grid = grid
        self.localizer = localizer if localizer is not None else Localizer()
        self.feature_dim = int(feature_dim) if feature_dim is not None else self._feature_dim()
        for stream, model in self.models.items():
            classes = getattr(model, "num_classes", len(self.class_names))
            if classes != len(self.class_names):
                raise StpnError(f"the {stream} model has {classes} classes but there are {len(self.class_names)} "
                                "class names")
        self._class_names_tensor = tf.constant(self.class_names, tf.string)
        d = self.feature_dim
        # The feature size is checked in the graph (a one-line InvalidArgumentError naming the input) rather
        # than by the signature (a shape mismatch error of the caller's TensorFlow version).
        # autograph off: the graph's control flow is explicit (tf.cond, tf.switch_case, map_fn), and converting
        # the whole call tree anyway cost seconds per signature traced.
        self.serve = tf.function(self._serve, autograph=False, input_signature=[
            tf.TensorSpec([None, None, None], tf.float32, name="rgb"),
            tf.TensorSpec([None, None, None], tf.float32, name="flow"),
            tf.TensorSpec([None], tf.int32, name="num_snippets"),
            tf.TensorSpec([None], tf.float32, name="seconds_per_snippet"),
        ])
        self.serve_examples = tf.function(self._serve_examples, autograph=False, input_signature=[
            tf.TensorSpec([None], tf.string, name="examples")])
        # serve_examples without the Localizer, for in-process callers that localize eagerly (not exported).
        self.streams_examples = tf.function(self._streams_examples, autograph=False, input_signature=[
            tf.TensorSpec([None], tf.string, name="examples")])

    def _feature_dim(self) -> int:
        dims = {s: model_feature_dim(m) // (2 if s == "joint" else 1) for s, m in self.models.items()}
        if len(set(dims.values())) != 1:
            raise StpnError(f"the stream models expect different feature sizes {dims}")
        return next(iter(dims.values()))

    @property
    def signatures(self) -> dict:
        return {"serving_default": self.serve, "serve_examples": self.serve_examples}

    def serving_functions(self) -> dict:
        """The signatures as in-process callers run them (stpn_tf.inference.runner.ServingModel).

        `serve_examples` runs the stream models as one graph and the Localizer eagerly after them, where it
        derives its bounds from the data: the same detections as the composed graph, several times faster
        at the shipped bounds. `serving_default` is the composed graph itself.
        """
        return {"serving_default": self.serve, "serve_examples": self._serve_examples_in_process,
                "streams_examples": self.streams_examples}

    def _serve_examples_in_process(self, examples: tf.Tensor) -> dict[str, Any]:
        out = dict(self.streams_examples(examples))
        out.update(self.localize_stacked(out, out["seconds_per_snippet"], out["duration"]))
        return out

    def run_streams(self, rgb: tf.Tensor, flow: tf.Tensor, num_snippets: tf.Tensor):
        """The test grid and the stream models: ({stream: attention, tcam, probabilities}, grid lengths,
        clipped num_snippets)."""
        # Clip once so that the grid and the seconds conversion see the same number of real snippets.
        num_snippets = tf.clip_by_value(tf.cast(num_snippets, tf.int32), 0, tf.shape(rgb)[1])
        features = {"rgb": rgb, "flow": flow}
        outputs, lengths = {}, None
        for stream, model in self.models.items():
            x = tf.concat([rgb, flow], axis=-1) if stream == "joint" else features[stream]
            on_grid, mask, lengths = grid_lib.sample_grid(x, num_snippets, self.grid)
            out = model({"features": on_grid, "mask": mask}, training=False)
            outputs[stream] = {"attention": tf.convert_to_tensor(out["attention"]),
                               "tcam": tf.convert_to_tensor(out["tcam"]),
                               "probabilities": tf.sigmoid(tf.convert_to_tensor(out["video_logits"]))}
        return outputs, lengths, num_snippets

    def stacked(self, outputs, lengths, num_snippets) -> dict[str, tf.Tensor]:
        """The raw outputs of `run_streams` as the signatures return them (stream axis 1)."""
        def stack(key):
            return tf.stack([outputs[s][key] for s in self.streams], axis=1)

        return {
            "video_probabilities": stack("probabilities"),
            "attention": stack("attention"),
            "tcam": stack("tcam"),
            "grid_length": lengths,
            "num_snippets": num_snippets,
            "class_names": tf.identity(self._class_names_tensor),
        }

    def localize_stacked(self, raw: Mapping[str, Any], seconds_per_snippet, durations=None) -> dict[str, Any]:
        """The Localizer on stacked raw outputs (as `stacked` returns them): called eagerly, it derives its
        bounds from the data (stpn_tf.localize.localizer), with the output of the graph's fixed bounds, and
        returns numpy arrays."""
        index = {s: i for i, s in enumerate(self.streams)}
        first, second = stream_roles(self.streams)

        def stream(name):
            i = index[name]
            return {"attention": raw["attention"][:, i], "tcam": raw["tcam"][:, i],
                    "probabilities": raw["video_probabilities"][:, i]}

        return self.localizer(stream(first), stream(second), lengths=raw["grid_length"],
                              num_snippets=raw["num_snippets"], seconds_per_snippet=seconds_per_snippet,
                              durations=durations)

    def run(self, rgb: tf.Tensor, flow: tf.Tensor, num_snippets: tf.Tensor, seconds_per_snippet: tf.Tensor,
            durations: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """The composed graph (see the module docstring for inputs and outputs)."""
        outputs, lengths, num_snippets = self.run_streams(rgb, flow, num_snippets)
        first, second = stream_roles(self.streams)
        detections = self.localizer(outputs[first], outputs[second], lengths=lengths, num_snippets=num_snippets,
                                    seconds_per_snippet=seconds_per_snippet, durations=durations)
        return {**detections, **self.stacked(outputs, lengths, num_snippets)}

    def _serve(self, rgb, flow, num_snippets, seconds_per_snippet):
        rgb, flow, num_snippets, seconds_per_snippet, check_values = check_serving_inputs(
            rgb, flow, num_snippets, seconds_per_snippet, feature_dim=self.feature_dim)
        finite = check_values()
        return guarded(self.run(rgb, flow, num_snippets, seconds_per_snippet), finite)

    def _parse_examples(self, examples):
        from stpn_tf.data.records.decoder import parse_example  # traced once, at export time

        d = self.feature_dim

        def parse(serialized):
            parsed = parse_example(serialized, num_classes=len(self.class_names), feature_dim=d)
            return (tf.RaggedTensor.from_tensor(parsed["video/rgb"][tf.newaxis])[0],
                    tf.RaggedTensor.from_tensor(parsed["video/flow"][tf.newaxis])[0],
                    parsed["video/num_snippets"], parsed["video/seconds_per_snippet"],
                    parsed["video/duration"], parsed["video/id"])

        ragged = tf.RaggedTensorSpec([None, d], tf.float32, ragged_rank=0)
        rgb, flow, num_snippets, sps, durations, video_ids = tf.map_fn(
            parse, examples, fn_output_signature=(ragged, ragged, tf.int32, tf.float32, tf.float32, tf.string))
        rgb = rgb.to_tensor() if isinstance(rgb, tf.RaggedTensor) else rgb
        flow = flow.to_tensor() if isinstance(flow, tf.RaggedTensor) else flow
        if self.grid.all_snippets:
            target = _bucket(tf.reduce_max(tf.concat([num_snippets, [1]], axis=0)))
            pad = [[0, 0], [0, target - tf.shape(rgb)[1]], [0, 0]]
            rgb, flow = tf.pad(rgb, pad), tf.pad(flow, pad)
        rgb, flow, num_snippets, sps, check_values = check_serving_inputs(rgb, flow, num_snippets, sps,
                                                                          feature_dim=self.feature_dim,
                                                                          name="serve_examples")
        return rgb, flow, num_snippets, sps, durations, video_ids, check_values

    def _serve_examples(self, examples):
        rgb, flow, num_snippets, sps, durations, video_ids, check_values = self._parse_examples(examples)
        finite = check_values()
        outputs = self.run(rgb, flow, num_snippets, sps, durations)
        outputs.update({"video_id": video_ids, "seconds_per_snippet": sps, "duration": durations})
        return guarded(outputs, finite)

    def _streams_examples(self, examples):
        rgb, flow, num_snippets, sps, durations, video_ids, check_values = self._parse_examples(examples)
        outputs = self.stacked(*self.run_streams(rgb, flow, num_snippets))
        outputs.update({"video_id": video_ids, "seconds_per_snippet": sps, "duration": durations})
        return guarded(outputs, check_values())

"""SavedModel export: both streams' STPN models plus the localization graph, features in, detections out.

Signatures (load with plain `tf.saved_model.load`; no stpn_tf import needed):

`serving_default`
  inputs:  rgb float32 [batch, time, D], flow float32 [batch, time, D] (padded; rows past num_snippets
           are ignored), num_snippets int32 [batch] (real snippets L), seconds_per_snippet float32 [batch]
  outputs: detection_classes int32 [batch, K] (-1 padding), detection_scores float32 [batch, K],
           detection_segments float32 [batch, K, 2] (seconds), num_detections int32 [batch],
           video_probabilities float32 [batch, 2, C] (sigmoid of the video logits; stream axis rgb, flow),
           attention float32 [batch, 2, T], tcam float32 [batch, 2, T, C] (on the grid that was localized),
           class_names string [C]
`serve_examples`
  inputs:  examples string [batch], serialized tf.train.Example records of the project's TFRecord
           schema (stpn_tf.data.tfrecord); durations in the records clip the segments.
  outputs: the same plus video_id string [batch].

Both streams see the same grid: by default the 400-position test grid sampled from the L real
snippets inside the graph (`floor(arange(T) * L / T)`, spec section 2), or with `all_snippets=True` all
real snippets (T = time, padded rows masked). The class names are also written as the asset
`assets/classes.txt`, one per line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from stpn_tf import timeline
from stpn_tf.errors import StpnError
from stpn_tf.localize import DEFAULTS, localize

STREAMS = ("rgb", "flow")


def _feature_dim(model) -> int:
    """D of a built STPN stream model (rows of its classifier kernel)."""
    try:
        return int(model.classifier.kernel.shape[0])
    except AttributeError as err:
        raise StpnError(f"export: cannot find the feature dimension of model {model.name!r} ({err})") from None


class ExportModule(tf.Module):
    """Both stream models, the localization settings and the class names, with the two signatures.

    Args:
      rgb_model: Stream model called as `model({"features": [B, T, D], "mask": [B, T]}, training=False)`
        returning {"attention" [B, T], "tcam" [B, T, C], "video_logits" [B, C]}.
      flow_model: The same for flow.
      class_names: C names.
      feature_dim: D; None reads it from rgb_model.
      grid_length: Positions sampled per video (400), ignored when all_snippets.
      all_snippets: Localize on all real snippets instead of the sampled grid.
      jit_compile: Compile the localization with XLA inside the SavedModel.
      **localize_settings: Keyword arguments of `stpn_tf.localize.localize` (thresholds, bounds).
    """

    def __init__(self, rgb_model, flow_model, class_names: Sequence[str], *, feature_dim: int | None = None,
                 grid_length: int = timeline.DEFAULT_GRID_LENGTH, all_snippets: bool = False,
                 jit_compile: bool = True, **localize_settings):
        super().__init__(name="stpn_export")
        unknown = set(localize_settings) - set(DEFAULTS)
        if unknown:
            raise StpnError(f"export: unknown localization settings {sorted(unknown)}")
        self.rgb_model = rgb_model
        self.flow_model = flow_model
        self.class_names = [str(name) for name in class_names]
        self.feature_dim = int(feature_dim if feature_dim is not None else _feature_dim(rgb_model))
        self.grid_length = int(grid_length)
        self.all_snippets = bool(all_snippets)
        self.settings = dict(DEFAULTS, **localize_settings)
        self._class_names_tensor = tf.constant(self.class_names, tf.string)
        self._localize = tf.function(self._localize_impl, jit_compile=jit_compile)
        d = self.feature_dim
        self.serve = tf.function(self._serve_impl, input_signature=[
            tf.TensorSpec([None, None, d], tf.float32, name="rgb"),
            tf.TensorSpec([None, None, d], tf.float32, name="flow"),
            tf.TensorSpec([None], tf.int32, name="num_snippets"),
            tf.TensorSpec([None], tf.float32, name="seconds_per_snippet"),
        ])
        self.serve_examples = tf.function(self._serve_examples_impl, input_signature=[
            tf.TensorSpec([None], tf.string, name="examples")])

    def _localize_impl(self, rgb, flow, lengths, num_snippets, seconds_per_snippet, durations):
        return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                        seconds_per_snippet=seconds_per_snippet, durations=durations, **self.settings)

    def _grid(self, features: tf.Tensor, num_snippets: tf.Tensor):
        """[B, time, D] real snippets -> ([B, T, D] grid features, [B, T] mask, [B] valid lengths)."""
        time_steps = tf.shape(features)[1]
        num_snippets = tf.clip_by_value(num_snippets, 0, time_steps)
        if self.all_snippets:
            mask = tf.sequence_mask(num_snippets, time_steps, dtype=tf.float32)
            return features, mask, num_snippets
        indices = timeline.eval_grid_indices_tf(num_snippets, self.grid_length)              # [B, T]
        # An empty video (L = 0) yields indices 0; clamp so the gather stays in range for time = 0 too.
        indices = tf.minimum(indices, tf.maximum(time_steps - 1, 0))
        sampled = tf.gather(features, indices, batch_dims=1)
        has_snippets = num_snippets > 0
        mask = tf.cast(tf.broadcast_to(has_snippets[:, tf.newaxis], tf.shape(indices)), tf.float32)
        lengths = tf.where(has_snippets, self.grid_length, 0)
        return sampled, mask, lengths

    def _run(self, rgb, flow, num_snippets, seconds_per_snippet, durations):
        # Clip once so that the grid and the seconds conversion see the same number of real snippets.
        num_snippets = tf.clip_by_value(tf.cast(num_snippets, tf.int32), 0, tf.shape(rgb)[1])
        streams, lengths = {}, None
        for name, model, features in (("rgb", self.rgb_model, rgb), ("flow", self.flow_model, flow)):
            grid, mask, lengths = self._grid(features, num_snippets)
            out = model({"features": grid, "mask": mask}, training=False)
            streams[name] = {"attention": tf.convert_to_tensor(out["attention"]),
                             "tcam": tf.convert_to_tensor(out["tcam"]),
                             "probabilities": tf.sigmoid(tf.convert_to_tensor(out["video_logits"]))}
        detections = self._localize(streams["rgb"], streams["flow"], lengths, num_snippets,
                                    seconds_per_snippet, durations)
        stack = lambda key: tf.stack([streams["rgb"][key], streams["flow"][key]], axis=1)  # noqa: E731
        return {
            **detections,
            "video_probabilities": stack("probabilities"),
            "attention": stack("attention"),
            "tcam": stack("tcam"),
            "class_names": tf.identity(self._class_names_tensor),
        }

    def _serve_impl(self, rgb, flow, num_snippets, seconds_per_snippet):
        return self._run(rgb, flow, num_snippets, seconds_per_snippet, None)

    def _serve_examples_impl(self, examples):
        from stpn_tf.data.tfrecord import parse_example  # only traced at export time

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
        outputs = self._run(rgb, flow, num_snippets, sps, durations)
        outputs["video_id"] = video_ids
        return outputs

    def save(self, out: str) -> None:
        """Writes the SavedModel to `out` atomically (temporary sibling directory, then rename)."""
        parent = os.path.dirname(os.path.abspath(out)) or "."
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp-", dir=parent)
        try:
            assets = os.path.join(tmp, "extra")
            os.makedirs(assets)
            classes_path = os.path.join(assets, "classes.txt")
            with open(classes_path, "w") as f:
                f.write("".join(name + "\n" for name in self.class_names))
            self.classes_asset = tf.saved_model.Asset(classes_path)
            signatures = {"serving_default": self.serve, "serve_examples": self.serve_examples}
            saved = os.path.join(tmp, "model")
            tf.saved_model.save(self, saved, signatures=signatures)
            with open(os.path.join(saved, "assets", "stpn_export.json"), "w") as f:
                json.dump({"classes": self.class_names, "feature_dim": self.feature_dim,
                           "grid_length": None if self.all_snippets else self.grid_length,
                           "localize": self.settings}, f, indent=1)
            if os.path.exists(out):
                shutil.rmtree(out)
            os.replace(saved, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def run_export(*, workdir: str, out: str, class_threshold: float = DEFAULTS["class_threshold"],
               tcam_threshold: float = DEFAULTS["tcam_threshold"], alpha: float = DEFAULTS["alpha"],
               interpolation: int = DEFAULTS["interpolation"], nms_threshold: float = DEFAULTS["nms_threshold"],
               max_detections: int = DEFAULTS["max_detections"],
               max_components_per_class: int = DEFAULTS["max_components_per_class"],
               max_classes_per_video: int | None = DEFAULTS["max_classes_per_video"],
               grid_length: int = timeline.DEFAULT_GRID_LENGTH, all_snippets: bool = False,
               jit_compile: bool = True, overwrite: bool = False) -> int:
    """`stpn export`: SavedModel of both trained streams plus localization; prints the signatures.

    Args:
      workdir: Training work directory (<workdir>/{rgb,flow}/model.keras, <workdir>/classes.json).
      out: SavedModel directory to create.
      class_threshold .. max_classes_per_video: Localization settings baked into the export.
      grid_length: Positions sampled per video (400).
      all_snippets: Localize on all real snippets instead.
      jit_compile: XLA-compile the localization inside the export.
      overwrite: Replace an existing `out`.

    Returns:
      0 on success (input problems raise StpnError).
    """
    from stpn_tf.model.stpn import load_classes, load_stream_model

    if os.path.exists(out) and not overwrite:
        raise StpnError(f"{out}: already exists (pass --overwrite to replace it)")
    classes = load_classes(workdir)
    models = {stream: load_stream_model(workdir, stream) for stream in STREAMS}
    for stream, model in models.items():
        if getattr(model, "num_classes", len(classes)) != len(classes):
            raise StpnError(f"{workdir}: the {stream} model has {model.num_classes} classes but classes.json "
                            f"lists {len(classes)}")
    dims = {stream: _feature_dim(model) for stream, model in models.items()}
    if dims["rgb"] != dims["flow"]:
        raise StpnError(f"{workdir}: rgb and flow models expect different feature sizes {dims}")
    module = ExportModule(models["rgb"], models["flow"], classes, feature_dim=dims["rgb"],
                          grid_length=grid_length, all_snippets=all_snippets, jit_compile=jit_compile,
                          class_threshold=class_threshold, tcam_threshold=tcam_threshold, alpha=alpha,
                          interpolation=interpolation, nms_threshold=nms_threshold, max_detections=max_detections,
                          max_components_per_class=max_components_per_class,
                          max_classes_per_video=max_classes_per_video)
    module.save(out)
    logging.info("exported %s -> %s", workdir, out)
    print(f"SavedModel written to {out}")
    print(f"  serving_default: rgb/flow float32 [batch, time, {dims['rgb']}], num_snippets int32 [batch], "
          "seconds_per_snippet float32 [batch]")
    print("  serve_examples: examples string [batch] (serialized tf.train.Example, stpn_tf TFRecord schema)")
    print(f"  classes ({len(classes)}): {', '.join(classes)}")
    return 0

"""One interface to the composed inference graph, from an export or built from a training work directory.

`load_serving_model(path)` returns a `ServingModel` either way: an `stpn export` directory is loaded with
plain `tf.saved_model.load` and its signatures are called; a training work directory's streams are
loaded and the same `InferenceModule` is built in memory, whose `serving_functions` take the signatures'
place. Callers (`stpn localize`, `stpn localize VIDEO`, Beam, the demo) never see the difference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from stpn_tf.data.grid import GridConfig
from stpn_tf.core.buckets import next_power_of_two
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts import export_dir as export_io
from stpn_tf.artifacts.results import detections_from_padded
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.model.stpn import load_stream_model
from stpn_tf.core.streams import TWO_STREAMS, check_streams
from stpn_tf.inference.module import InferenceModule, model_feature_dim


class ServingModel:
    """Features or serialized records in, detections and raw outputs out.

    Args:
      functions: {"serving_default", "serve_examples"}: callables with the signatures' keyword inputs
        and outputs (an export's signatures, or `InferenceModule.serving_functions`), and optionally
        "streams_examples": `serve_examples` without the localization (in process only).
      owner: What must outlive the functions (the loaded SavedModel, or the module): they reference its
        variables.

    Attributes:
      classes: C class names.
      feature_dim: D per stream.
      streams: The model streams inside.
      grid_length: Positions localized per video, None when every real snippet is.
      localizer_config: The localization settings of the graph.
      source: The directory it came from.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Mapping[str, Any]]], *, classes: Sequence[str],
                 feature_dim: int, streams: Sequence[str], grid_length: int | None,
                 localizer_config: LocalizerConfig, source: str, owner: Any = None):
        self._serving_default = functions["serving_default"]
        self._serve_examples = functions["serve_examples"]
        self._streams_examples = functions.get("streams_examples")
        self._owner = owner
        self.classes = [str(c) for c in classes]
        self.feature_dim = int(feature_dim)
        self.streams = tuple(streams)
        self.grid_length = None if grid_length is None else int(grid_length)
        self.localizer_config = localizer_config
        self.source = source

    def call_features(self, rgb: np.ndarray, flow: np.ndarray, num_snippets: np.ndarray,
                      seconds_per_snippet: np.ndarray) -> dict[str, np.ndarray]:
        """`serving_default` on a padded batch; numpy outputs."""
        out = self._serving_default(
            rgb=tf.constant(rgb, tf.float32), flow=tf.constant(flow, tf.float32),
            num_snippets=tf.constant(num_snippets, tf.int32),
            seconds_per_snippet=tf.constant(seconds_per_snippet, tf.float32))
        return {key: np.asarray(value) for key, value in out.items()}

    @property
    def runs_streams_alone(self) -> bool:
        """`call_streams` runs the stream models without the Localizer (in process; an export's signature
        always localizes)."""
        return self._streams_examples is not None

    def call_streams(self, examples: tf.Tensor) -> dict[str, np.ndarray]:
        """The raw outputs of `serve_examples` (no detections): without localizing when the model runs in
        process, else the whole signature."""
        if self._streams_examples is None:
            return self.call_examples(examples)
        out = self._streams_examples(examples)
        return {key: np.asarray(value) for key, value in out.items()}

    def call_examples(self, examples: tf.Tensor) -> dict[str, np.ndarray]:
        """`serve_examples` on a batch of serialized records of the project's TFRecord schema.

        Args:
          examples: string [B] (a batch of a tf.data pipeline of records, or a tf.constant of them).

        Returns:
          The signature's outputs as numpy arrays.
        """
        out = self._serve_examples(examples=examples)
        return {key: np.asarray(value) for key, value in out.items()}

    def predict(self, rgb: Sequence[np.ndarray], flow: Sequence[np.ndarray], seconds_per_snippet: Sequence[float],
                *, pad_batch_to: int | None = None) -> list[dict[str, Any]]:
        """Runs one batch of videos of any lengths through `serving_default`.

        The videos are padded along time to the next power of two of the longest one (num_snippets carries
        the true lengths, and the graph ignores the padded rows), which bounds the number of distinct
        shapes the compiled localization sees. With `pad_batch_to`, the batch is filled up to that size
        with copies of the last video, so that every call of a batched job has the same batch size.

        Args:
          rgb: N arrays float32 [L_i, D].
          flow: N arrays float32 [L_i, D].
          seconds_per_snippet: N floats (stride_frames / fps).
          pad_batch_to: Optional fixed batch size >= N.

        Returns:
          N dicts: "detections" (ActivityNet result dicts, seconds), "length" (valid grid positions T_i),
          "attention" float32 [S, T_i], "tcam" float32 [S, T_i, C], "probabilities" float32 [S, C]
          (stream axis as `streams`), "num_snippets" L_i.
        """
        count = len(rgb)
        if count == 0:
            return []
        if not len(flow) == len(seconds_per_snippet) == count:
            raise StpnError("predict: rgb, flow and seconds_per_snippet have different numbers of videos")
        lengths = [int(np.shape(r)[0]) for r in rgb]
        batch = max(count, pad_batch_to or count)
        time = next_power_of_two(max(lengths))
        inputs = {name: np.zeros((batch, time, self.feature_dim), np.float32) for name in ("rgb", "flow")}
        source = [min(i, count - 1) for i in range(batch)]
        for i, j in enumerate(source):
            inputs["rgb"][i, :lengths[j]] = rgb[j]
            inputs["flow"][i, :lengths[j]] = flow[j]
        out = self.call_features(inputs["rgb"], inputs["flow"], np.asarray([lengths[j] for j in source], np.int32),
                                 np.asarray([seconds_per_snippet[j] for j in source], np.float32))
        results = []
        for i in range(count):
            # Exports made before grid_length was an output: the grid, or all real snippets.
            valid = int(out["grid_length"][i]) if "grid_length" in out else (self.grid_length or lengths[i])
            results.append({"detections": detections_from_padded(out, self.classes, i), "length": valid,
                            "num_snippets": lengths[i], "attention": out["attention"][i, :, :valid],
                            "tcam": out["tcam"][i, :, :valid], "probabilities": out["video_probabilities"][i]})
        return results


def load_export(path: str) -> ServingModel:
    """An `stpn export` directory as a ServingModel (its own settings)."""
    info = export_io.read_export_info(path)
    loaded = export_io.load_saved_model(path)
    missing = [name for name in ("serving_default", "serve_examples") if name not in loaded.signatures]
    if missing:
        raise StpnError(f"{path}: the SavedModel lacks the signature(s) {', '.join(missing)}")
    return ServingModel(dict(loaded.signatures), classes=info.classes, feature_dim=info.feature_dim,
                        streams=info.streams, grid_length=info.grid_length, localizer_config=LocalizerConfig.from_dict(info.localize),
                        source=path, owner=loaded)


def build_module(workdir: str, *, grid: GridConfig = GridConfig(), localizer_config: LocalizerConfig = LocalizerConfig(),
                 streams: Sequence[str] = TWO_STREAMS, jit_compile: bool = True,
                 feature_dim: int | None = None) -> InferenceModule:
    """The InferenceModule of a training work directory's trained streams.

    Args:
      feature_dim: When given, the models must read features of this size per stream (a dataset's D).
    """
    work = WorkDir(workdir).require()
    classes = work.classes()
    streams = check_streams(streams)
    models = {s: load_stream_model(work, s) for s in streams}
    if feature_dim is not None:
        for s, model in models.items():
            expected = feature_dim * (2 if s == "joint" else 1)
            if model_feature_dim(model) != expected:
                raise StpnError(f"{workdir}: the {s} model reads {model_feature_dim(model)}-d features but the "
                                f"dataset has {expected}: the dataset is not the one the model was trained on")
    return InferenceModule(models, classes, grid=grid, localizer=Localizer(localizer_config, jit_compile=jit_compile))


def serving_model_of(module: InferenceModule, source: str) -> ServingModel:
    return ServingModel(module.serving_functions(), classes=module.class_names, feature_dim=module.feature_dim,
                        streams=module.streams, grid_length=module.grid.grid_length,
                        localizer_config=module.localizer.config, source=source, owner=module)


def load_serving_model(path: str, *, grid: GridConfig | None = None, localizer_config: LocalizerConfig | None = None,
                       streams: Sequence[str] | None = None, jit_compile: bool = True,
                       feature_dim: int | None = None) -> ServingModel:
    """Loads an export directory, or builds the same graph from a training work directory.

    Args:
      path: Export directory (saved_model.pb: its own settings are used, and settings given here that
        differ are named in a warning) or training work directory (classes.json, <stream>/model.keras).
      grid, localizer_config, streams, jit_compile: For a work directory: the graph to build (defaults:
        the paper's grid, LocalizerConfig(), both streams, XLA).
      feature_dim: For a work directory: the D the models must read.
    """
    if export_io.is_export_dir(path):
        model = load_export(path)
        asked = {"grid_length": None if grid is None else grid.grid_length,
                 "streams": None if streams is None else tuple(check_streams(streams))}
        have = {"grid_length": model.grid_length, "streams": model.streams}
        ignored = {k: v for k, v in asked.items() if v is not None and v != have[k]}
        if grid is None:
            ignored.pop("grid_length", None)
        if localizer_config is not None and localizer_config != model.localizer_config:
            ignored["localize"] = {k: v for k, v in localizer_config.to_dict().items()
                                   if model.localizer_config.to_dict()[k] != v}
        if ignored:
            logging.warning("%s: the export's own settings are used; ignoring %s", path, ignored)
        return model
    if not os.path.isdir(path):
        raise StpnError(f"{path}: neither an export directory (saved_model.pb) nor a training work directory")
    module = build_module(path, grid=grid or GridConfig(), localizer_config=localizer_config or LocalizerConfig(),
                          streams=streams or TWO_STREAMS, jit_compile=jit_compile, feature_dim=feature_dim)
    return serving_model_of(module, path)

"""`stpn localize VIDEO...`: raw videos -> features -> STPN export -> detections + figures.

The model is an export directory (`stpn export`, a SavedModel with `saved_model.pb`), called through its
`serving_default` signature, or a training work directory, from which the same graph is built in memory
(stpn_tf.export.ExportModule) so that both paths share one code path and give the same numbers.

Writes into `out_dir`:
  features/videos/{rgb,flow,meta}/<video>.*   the extracted features (reusable with build-dataset)
  detections.json                              ActivityNet-format results of every localized video
  figures/<video>.png                          timeline figure (stpn_tf.plots)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from stpn_tf import timeline
from stpn_tf.errors import StpnError
from stpn_tf.extract import flow as flow_lib
from stpn_tf.extract import pipeline as extract_lib

_SPLIT = "videos"
EXPORT_INFO = os.path.join("assets", "stpn_export.json")  # written by stpn_tf.export next to the SavedModel


def is_export(path: str) -> bool:
    """True when `path` is a SavedModel directory (holds saved_model.pb)."""
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class ServingModel:
    """Features in, detections and raw outputs out, through the export's `serving_default` signature.

    Load with `load_serving_model`. Attributes: `classes` (C names), `feature_dim` (D), `grid_length`
    (positions localized per video, None when the export localizes all real snippets), `settings`
    (the localization settings baked into the graph), `source` (the path it came from).
    """

    def __init__(self, serve, *, classes: Sequence[str], feature_dim: int, grid_length: int | None,
                 settings: Mapping[str, Any], source: str, owner: Any = None):
        self._serve = serve
        # The loaded SavedModel object must outlive its signature functions (they reference its variables).
        self._owner = owner
        self.classes = [str(c) for c in classes]
        self.feature_dim = int(feature_dim)
        self.grid_length = None if grid_length is None else int(grid_length)
        self.settings = dict(settings)
        self.source = source

    def predict(self, rgb: Sequence[np.ndarray], flow: Sequence[np.ndarray],
                seconds_per_snippet: Sequence[float], *, pad_batch_to: int | None = None) -> list[dict[str, Any]]:
        """Runs one batch of videos of any lengths through `serving_default`.

        The videos are padded along time to the next power of two of the longest one (num_snippets carries
        the true lengths, and the export ignores the padded rows), which bounds the number of distinct
        shapes the export's XLA-compiled localization sees. With `pad_batch_to`, the batch is filled up to
        that size with copies of the last video, so that every call of a batched job has the same batch size.

        Args:
          rgb: N arrays float32 [L_i, D].
          flow: N arrays float32 [L_i, D].
          seconds_per_snippet: N floats (stride_frames / fps).
          pad_batch_to: Optional fixed batch size >= N.

        Returns:
          N dicts: "detections" (ActivityNet result dicts {"label", "score", "segment": [s, e]}, seconds),
          "length" (valid grid positions T_i: grid_length, or L_i with all snippets), "attention" float32
          [2, T_i], "tcam" float32 [2, T_i, C], "probabilities" float32 [2, C] (stream axis rgb, flow),
          "num_snippets" L_i.
        """
        count = len(rgb)
        if count == 0:
            return []
        if not len(flow) == len(seconds_per_snippet) == count:
            raise StpnError("predict: rgb, flow and seconds_per_snippet have different numbers of videos")
        lengths = [int(np.shape(r)[0]) for r in rgb]
        batch = max(count, pad_batch_to or count)
        time = _next_power_of_two(max(lengths))
        inputs = {name: np.zeros((batch, time, self.feature_dim), np.float32) for name in ("rgb", "flow")}
        for i in range(batch):
            j = min(i, count - 1)
            inputs["rgb"][i, :lengths[j]] = rgb[j]
            inputs["flow"][i, :lengths[j]] = flow[j]
        num_snippets = np.asarray([lengths[min(i, count - 1)] for i in range(batch)], np.int32)
        sps = np.asarray([seconds_per_snippet[min(i, count - 1)] for i in range(batch)], np.float32)
        out = self._serve(rgb=tf.constant(inputs["rgb"]), flow=tf.constant(inputs["flow"]),
                          num_snippets=tf.constant(num_snippets), seconds_per_snippet=tf.constant(sps))
        out = {key: value.numpy() for key, value in out.items()}
        results = []
        for i in range(count):
            valid = self.grid_length if self.grid_length is not None else lengths[i]
            k = int(out["num_detections"][i])
            detections = [{"label": self.classes[int(out["detection_classes"][i, j])],
                           "score": float(out["detection_scores"][i, j]),
                           "segment": [float(out["detection_segments"][i, j, 0]),
                                       float(out["detection_segments"][i, j, 1])]} for j in range(k)]
            results.append({"detections": detections, "length": valid, "num_snippets": lengths[i],
                            "attention": out["attention"][i, :, :valid], "tcam": out["tcam"][i, :, :valid],
                            "probabilities": out["video_probabilities"][i]})
        return results


def load_serving_model(path: str, *, grid_size: int | None = timeline.DEFAULT_GRID_LENGTH,
                       localize_params: Mapping[str, Any] | None = None,
                       jit_compile: bool = True) -> ServingModel:
    """Loads an export directory, or builds the same graph from a training work directory.

    Args:
      path: Export directory (saved_model.pb; loaded with plain tf.saved_model.load, its settings are
        used) or training work directory (classes.json, rgb/model.keras, flow/model.keras).
      grid_size: For a work directory only: grid positions (400) or None for all real snippets.
      localize_params: For a work directory only: keywords of stpn_tf.localize.localize.
      jit_compile: For a work directory only: XLA-compile the localization.

    Returns:
      A ServingModel.
    """
    if is_export(path):
        info_path = os.path.join(path, EXPORT_INFO)
        try:
            with open(info_path) as handle:
                info = json.load(handle)
            classes, feature_dim = info["classes"], info["feature_dim"]
        except FileNotFoundError:
            raise StpnError(f"{info_path}: missing; {path} is a SavedModel but not an `stpn export`") from None
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise StpnError(f"{info_path}: malformed export description ({error})") from None
        try:
            loaded = tf.saved_model.load(path)
        except Exception as error:  # noqa: BLE001 - TF raises many types for a damaged SavedModel
            raise StpnError(f"{path}: cannot load the SavedModel ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''})") from None
        if "serving_default" not in loaded.signatures:
            raise StpnError(f"{path}: the SavedModel has no serving_default signature")
        changed = {k: v for k, v in (localize_params or {}).items() if info.get("localize", {}).get(k) != v}
        if localize_params is not None and grid_size != info.get("grid_length"):
            changed["grid_size"] = grid_size
        if changed:
            logging.warning("%s: the export's own localization settings are used; ignoring %s", path, changed)
        return ServingModel(loaded.signatures["serving_default"], classes=classes, feature_dim=feature_dim,
                            grid_length=info.get("grid_length"), settings=info.get("localize", {}),
                            source=path, owner=loaded)

    from stpn_tf.export import ExportModule
    from stpn_tf.model.stpn import load_classes, load_stream_model

    if not os.path.isdir(path):
        raise StpnError(f"{path}: neither an export directory (saved_model.pb) nor a training work directory")
    classes = load_classes(path)
    all_snippets = grid_size is None
    module = ExportModule(load_stream_model(path, "rgb"), load_stream_model(path, "flow"), classes,
                          grid_length=grid_size or timeline.DEFAULT_GRID_LENGTH, all_snippets=all_snippets,
                          jit_compile=jit_compile, **dict(localize_params or {}))
    return ServingModel(module.serve, classes=classes, feature_dim=module.feature_dim,
                        grid_length=None if all_snippets else module.grid_length, settings=module.settings,
                        source=path, owner=module)


def _ground_truth(path: str | None, subset: str | None) -> dict[str, list[Any]]:
    if path is None:
        return {}
    from stpn_tf.data import annotations as ann

    if os.path.isdir(path):
        records = ann.read_thumos14_toolkit(path, subset=subset or "test")
    else:
        records = ann.read_activitynet_json(path, subset=subset)
    return {r.video_id: list(r.segments) for r in records}


def localize_videos(*, videos: Sequence[str], workdir: str, out_dir: str, rgb_model: str,
                    flow_model: str, fps: float = 25.0, stride_frames: int = 16, batch_size: int = 8,
                    grid_size: int | None = timeline.DEFAULT_GRID_LENGTH,
                    ground_truth: str | None = None, ground_truth_subset: str | None = None,
                    tvl1_scales: int = 5, tvl1_warps: int = 5, tvl1_inner_iterations: int = 30,
                    tvl1_outer_iterations: int = 10, rgb_feature_tensor: str | None = None,
                    flow_feature_tensor: str | None = None,
                    rgb_input_range: Sequence[float] | None = None,
                    flow_input_range: Sequence[float] | None = None, jit_compile: bool = True,
                    figures: bool = True, localize_params: Mapping[str, Any] | None = None) -> int:
    """Extracts features of `videos`, localizes actions with an export or a training work directory, and
    writes detections.json and one timeline figure per video.

    Args:
        videos: Video files and/or directories of video files.
        workdir: Export directory (`stpn export`; detected by its saved_model.pb) or training work
            directory (classes.json, rgb/model.keras, flow/model.keras).
        out_dir: Output directory (see module docstring).
        rgb_model, flow_model, fps, stride_frames, batch_size, tvl1_*, *_feature_tensor,
        *_input_range: Feature extraction, as stpn_tf.extract.pipeline.run_extract. fps and stride
            must match the features the streams were trained on.
        grid_size: Work directory only: test grid (400 as in the paper) or None for every real snippet.
            An export carries its own.
        ground_truth: Optional ActivityNet-layout JSON or THUMOS14 toolkit folder; its segments are
            drawn in the figures.
        ground_truth_subset: Subset to read from `ground_truth`.
        jit_compile: Work directory only: compile localization with XLA.
        figures: Write the timeline figures.
        localize_params: Work directory only: keywords of stpn_tf.localize.localize (class_threshold,
            tcam_threshold, alpha, interpolation, nms_threshold, ...); defaults are the spec's. An export
            uses the settings it was exported with (a warning names the ignored differences).

    Returns:
        0 if every video was localized, 1 if any failed (each failure is printed on one line).
    """
    from stpn_tf import inference
    from stpn_tf.plots import plot_timeline

    paths = extract_lib.expand_videos(videos)
    model = load_serving_model(workdir, grid_size=grid_size, localize_params=localize_params,
                               jit_compile=jit_compile)
    truth = _ground_truth(ground_truth, ground_truth_subset)
    rgb, flow = extract_lib.load_stream_models(
        rgb_model=rgb_model, flow_model=flow_model, rgb_feature_tensor=rgb_feature_tensor,
        flow_feature_tensor=flow_feature_tensor, rgb_input_range=rgb_input_range,
        flow_input_range=flow_input_range)
    tvl1 = flow_lib.TVL1Options(scales=tvl1_scales, warps=tvl1_warps,
                                inner_iterations=tvl1_inner_iterations,
                                outer_iterations=tvl1_outer_iterations)
    features_root = os.path.join(out_dir, "features")
    sps = timeline.seconds_per_snippet(fps, stride_frames)

    results: dict[str, list[dict[str, Any]]] = {}
    failures = 0
    for path in paths:
        try:
            features = extract_lib.extract_video(path, rgb_model=rgb, flow_model=flow, fps=fps,
                                                 stride_frames=stride_frames, batch_size=batch_size,
                                                 tvl1=tvl1)
            if features.rgb.shape[1] != model.feature_dim:
                raise StpnError(f"{path}: features have {features.rgb.shape[1]} values per snippet but "
                                f"{model.source} expects {model.feature_dim}")
        except StpnError as error:
            failures += 1
            print(f"error: {error}", flush=True)
            continue
        extract_lib.write_video_features(features_root, _SPLIT, features)
        # One video per call: extraction dominates, and batch 1 with the 400 grid keeps one XLA shape.
        output = model.predict([features.rgb], [features.flow], [sps])[0]
        results[features.video_id] = output["detections"]
        if figures:
            _figure(plot_timeline, os.path.join(out_dir, "figures", f"{features.video_id}.png"),
                    features.video_id, output, model.classes, seconds_per_snippet=sps,
                    duration=features.duration, truth=truth.get(features.video_id))

    if results:
        inference.write_results({"version": inference.RESULTS_VERSION, "results": results,
                                 "external_data": {"used": True, "details": "I3D features pretrained on Kinetics"}},
                                os.path.join(out_dir, "detections.json"))
    print(f"localize: {len(results)} videos localized, {failures} failed -> {out_dir}", flush=True)
    return 1 if failures else 0


def _figure(plot_timeline, path: str, video_id: str, output: Mapping[str, Any], classes: Sequence[str], *,
            seconds_per_snippet: float, duration: float, truth: Sequence[Any] | None) -> None:
    length = int(output["length"])
    # Each grid position is drawn at its center, g + 0.5, converted by the timeline module.
    times = timeline.grid_to_seconds(np.arange(length) + 0.5, length=length,
                                     num_snippets=int(output["num_snippets"]),
                                     seconds_per_snippet=seconds_per_snippet, duration=duration)
    attention, tcam = output["attention"], output["tcam"]                     # [2, T], [2, T, C]
    detected = sorted({d["label"] for d in output["detections"]})
    # Weighted T-CAM (eq. 5-6), psi = lambda * sigmoid(a), averaged over the two streams.
    psi = np.mean(attention[:, :, None] / (1.0 + np.exp(-tcam)), axis=0)   # [T, C]
    plot_timeline(path, video_id=video_id, times=np.asarray(times),
                  attention={"RGB": attention[0], "FLOW": attention[1]},
                  tcam={name: psi[:, list(classes).index(name)] for name in detected},
                  detections=output["detections"], ground_truth=truth, duration=duration,
                  tcam_label="weighted T-CAM")

"""`stpn localize VIDEO...`: raw videos -> features -> trained STPN streams -> detections + figures.

Writes into `out_dir`:
  features/videos/{rgb,flow,meta}/<video>.*   the extracted features (reusable with build-dataset)
  detections.json                              ActivityNet-format results of every localized video
  figures/<video>.png                          timeline figure (stpn_tf.plots)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from stpn_tf import timeline
from stpn_tf.errors import StpnError
from stpn_tf.extract import flow as flow_lib
from stpn_tf.extract import pipeline as extract_lib

_SPLIT = "videos"


def stream_outputs(model: Any, features: np.ndarray, grid_size: int | None) -> dict[str, np.ndarray]:
    """Runs one trained stream on one video's features.

    Args:
        model: STPN stream model (`model({"features", "mask"})` -> attention, tcam, video_logits).
        features: float32 [L, D].
        grid_size: Test grid length (400) sampled with timeline.eval_grid_indices, or None for all
            L snippets.

    Returns:
        "attention" [T], "tcam" [T, C], "probabilities" [C] (sigmoid of the video logits), T the grid.
    """
    if grid_size is not None:
        features = features[timeline.eval_grid_indices(features.shape[0], grid_size)]
    inputs = {"features": tf.constant(features[None], tf.float32),
              "mask": tf.ones([1, features.shape[0]], tf.float32)}
    out = model(inputs, training=False)
    return {"attention": np.asarray(out["attention"][0]), "tcam": np.asarray(out["tcam"][0]),
            "probabilities": np.asarray(tf.sigmoid(out["video_logits"][0]))}


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
    """Extracts features of `videos`, localizes actions with the trained streams of `workdir`, and
    writes detections.json and one timeline figure per video.

    Args:
        videos: Video files and/or directories of video files.
        workdir: Training work directory (classes.json, rgb/model.keras, flow/model.keras).
        out_dir: Output directory (see module docstring).
        rgb_model, flow_model, fps, stride_frames, batch_size, tvl1_*, *_feature_tensor,
        *_input_range: Feature extraction, as stpn_tf.extract.pipeline.run_extract. fps and stride
            must match the features the streams were trained on.
        grid_size: Test grid (400 as in the paper) or None for every real snippet.
        ground_truth: Optional ActivityNet-layout JSON or THUMOS14 toolkit folder; its segments are
            drawn in the figures.
        ground_truth_subset: Subset to read from `ground_truth`.
        jit_compile: Compile localization with XLA.
        figures: Write the timeline figures.
        localize_params: Keywords of stpn_tf.localize.localize (class_threshold, tcam_threshold,
            alpha, interpolation, nms_threshold, ...); defaults are the spec's.

    Returns:
        0 if every video was localized, 1 if any failed (each failure is printed on one line).
    """
    from stpn_tf import inference
    from stpn_tf.model.stpn import STREAMS, load_classes, load_stream_model
    from stpn_tf.plots import plot_timeline

    paths = extract_lib.expand_videos(videos)
    classes = load_classes(workdir)
    streams = {s: load_stream_model(workdir, s) for s in STREAMS}
    truth = _ground_truth(ground_truth, ground_truth_subset)
    rgb, flow = extract_lib.load_stream_models(
        rgb_model=rgb_model, flow_model=flow_model, rgb_feature_tensor=rgb_feature_tensor,
        flow_feature_tensor=flow_feature_tensor, rgb_input_range=rgb_input_range,
        flow_input_range=flow_input_range)
    tvl1 = flow_lib.TVL1Options(scales=tvl1_scales, warps=tvl1_warps,
                                inner_iterations=tvl1_inner_iterations,
                                outer_iterations=tvl1_outer_iterations)
    features_root = os.path.join(out_dir, "features")

    per_video: list[dict[str, Any]] = []
    failures = 0
    for path in paths:
        try:
            features = extract_lib.extract_video(path, rgb_model=rgb, flow_model=flow, fps=fps,
                                                 stride_frames=stride_frames, batch_size=batch_size,
                                                 tvl1=tvl1)
        except StpnError as error:
            failures += 1
            print(f"error: {error}", flush=True)
            continue
        extract_lib.write_video_features(features_root, _SPLIT, features)
        outputs = {s: stream_outputs(streams[s], getattr(features, s), grid_size) for s in STREAMS}
        per_video.append({"features": features, "outputs": outputs})

    if per_video:
        raw = _raw_outputs(per_video, classes, fps=fps, stride_frames=stride_frames)
        results = inference.localize_raw(raw, jit_compile=jit_compile, **dict(localize_params or {}))
        inference.write_results(results, os.path.join(out_dir, "detections.json"))
        if figures:
            for index, item in enumerate(per_video):
                video_id = item["features"].video_id
                _figure(plot_timeline, os.path.join(out_dir, "figures", f"{video_id}.png"), raw, index,
                        classes, results["results"].get(video_id, []), truth.get(video_id))
    print(f"localize: {len(per_video)} videos localized, {failures} failed -> {out_dir}", flush=True)
    return 1 if failures else 0


def _raw_outputs(per_video: Sequence[Mapping[str, Any]], classes: Sequence[str], *, fps: float,
                 stride_frames: int) -> dict[str, np.ndarray]:
    """The raw-outputs dict of stpn_tf.inference (padded along time) for the localized videos."""
    lengths = [item["outputs"]["rgb"]["attention"].shape[0] for item in per_video]
    max_t = max(lengths)
    raw: dict[str, Any] = {
        "video_id": np.asarray([item["features"].video_id for item in per_video]),
        "length": np.asarray(lengths, np.int32),
        "num_snippets": np.asarray([item["features"].num_snippets for item in per_video], np.int32),
        "seconds_per_snippet": np.full(len(per_video), timeline.seconds_per_snippet(fps, stride_frames),
                                       np.float32),
        "duration": np.asarray([item["features"].duration for item in per_video], np.float32),
        "classes": np.asarray(list(classes)),
    }
    for stream in ("rgb", "flow"):
        raw[f"{stream}/attention"] = np.stack([
            np.pad(item["outputs"][stream]["attention"], (0, max_t - n))
            for item, n in zip(per_video, lengths)])
        raw[f"{stream}/tcam"] = np.stack([
            np.pad(item["outputs"][stream]["tcam"], ((0, max_t - n), (0, 0)))
            for item, n in zip(per_video, lengths)])
        raw[f"{stream}/probabilities"] = np.stack(
            [item["outputs"][stream]["probabilities"] for item in per_video])
    return raw


def _figure(plot_timeline, path: str, raw: Mapping[str, np.ndarray], index: int,
            classes: Sequence[str], detections: Sequence[Mapping[str, Any]],
            truth: Sequence[Any] | None) -> None:
    length = int(raw["length"][index])
    # Each grid position is drawn at its center, g + 0.5, converted by the timeline module.
    times = timeline.grid_to_seconds(np.arange(length) + 0.5, length=length,
                                     num_snippets=int(raw["num_snippets"][index]),
                                     seconds_per_snippet=float(raw["seconds_per_snippet"][index]),
                                     duration=float(raw["duration"][index]))
    attention = {s.upper(): raw[f"{s}/attention"][index, :length] for s in ("rgb", "flow")}
    detected = sorted({d["label"] for d in detections})
    # Weighted T-CAM (eq. 5-6), psi = lambda * sigmoid(a), averaged over the two streams.
    psi = np.mean([raw[f"{s}/attention"][index, :length, None]
                   / (1.0 + np.exp(-raw[f"{s}/tcam"][index, :length])) for s in ("rgb", "flow")], axis=0)
    tcam = {name: psi[:, list(classes).index(name)] for name in detected}
    plot_timeline(path, video_id=str(raw["video_id"][index]), times=np.asarray(times), attention=attention,
                  tcam=tcam, detections=detections, ground_truth=truth,
                  duration=float(raw["duration"][index]), tcam_label="weighted T-CAM")

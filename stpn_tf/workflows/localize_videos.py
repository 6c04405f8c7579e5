"""`stpn localize VIDEO...`: raw videos -> features -> the composed STPN graph -> detections + figures.

The model is an export directory (`stpn export`) or a training work directory, loaded through
stpn_tf.inference.runner.load_serving_model: both run the same graph and give the same numbers.

Writes into `out_dir`:
  features/videos/{rgb,flow,meta}/<video>.*   the extracted features, kept: a rerun reuses them (same
                                               models and settings), build-dataset reads them
  detections.json                              ActivityNet-format results of every localized video
  figures/<video>.png                          timeline figure (stpn_tf.workflows.plots)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stpn_tf.data.grid import GridConfig
from stpn_tf.core.errors import StpnError
from stpn_tf.extract import pipeline as extract_lib
from stpn_tf.extract.pipeline import ExtractConfig, I3DModels
from stpn_tf.artifacts.feature_dir import write_video
from stpn_tf.artifacts.ground_truth import segments_by_video
from stpn_tf.artifacts.results import results_envelope, write_results
from stpn_tf.localize import timeline
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.inference.runner import load_serving_model

_SPLIT = "videos"


def localize_videos(*, videos: Sequence[str], model_path: str, out_dir: str, models: I3DModels = I3DModels(),
                    extract: ExtractConfig = ExtractConfig(), grid: GridConfig | None = None,
                    localizer_config: LocalizerConfig | None = None, streams: Sequence[str] | None = None,
                    ground_truth: str | None = None, ground_truth_subset: str | None = None, jit_compile: bool = True,
                    figures: bool = True, progress_interval: float = 30.0) -> int:
    """Extracts features of `videos`, localizes actions, writes detections.json and one figure per video.

    The features are kept in `<out_dir>/features/videos/` (the per-video layout): a rerun reuses every
    video whose files are complete and made with the same models and settings
    (feature_dir.reuse_check, as `stpn extract`), and build-dataset reads them. A model trained on RGB
    alone needs only the RGB I3D (no optical flow is computed). The I3D feature size is checked against
    the model on one stack before any video is read.

    Args:
        videos: Video files and/or directories of video files.
        model_path: Export directory or training work directory.
        out_dir: Output directory (see module docstring).
        models: The I3D feature extractors (default: the built-in Kinetics-400 RGB I3D, no flow model);
            their fps and stride (in `extract`) must match the features the streams were trained on.
        extract: Frame rate, stacks, crop and TV-L1 settings.
        grid, localizer_config, jit_compile: For a work directory, the graph to build (an export carries
            its own; differences are named in a warning).
        streams: For a work directory, the trained streams to use (default both; ["rgb"] for RGB alone).
        ground_truth: Optional ActivityNet-layout JSON or THUMOS14 toolkit folder; its segments are drawn
            in the figures.
        ground_truth_subset: Subset to read from `ground_truth`.
        figures: Write the timeline figures.
        progress_interval: Seconds between extraction progress lines within one video.

    Returns:
        0 if every video was localized, 1 if any failed (each failure is printed on one line).
    """
    from stpn_tf.workflows.plots import plot_timeline

    paths = extract_lib.expand_videos(videos)
    model = load_serving_model(model_path, grid=grid, localizer_config=localizer_config, streams=streams,
                               jit_compile=jit_compile)
    # Only a model on RGB alone can do without the flow I3D and the optical flow.
    needed = ("rgb",) if tuple(model.streams) == ("rgb",) else extract_lib.STREAMS
    needed = models.check(needed)
    truth = segments_by_video(ground_truth, ground_truth_subset)
    features_root = os.path.join(out_dir, "features")
    prints = extract_lib.fingerprint(models, extract, needed)
    todo, reused = extract_lib.plan(paths, out=features_root, split=_SPLIT, fingerprint=prints, streams=needed)
    rgb = flow = None
    if todo:
        rgb, flow = models.load(needed)
        extract_lib.check_feature_size(rgb, flow, config=extract, models=models, expected=model.feature_dim,
                                       expected_by=model.source)
    progress = extract_lib.Progress([extract_lib.expected_frames(p, extract.fps) for p in todo],
                                    interval=progress_interval)
    sps = timeline.seconds_per_snippet(extract.fps, extract.stride_frames)

    results: dict[str, list[dict[str, Any]]] = {}
    failures = 0
    for path in paths:
        video_id = extract_lib.video_id_from_path(path)
        features = reused.get(video_id)
        if features is None:
            progress.start(video_id)
            try:
                features = extract_lib.extract_video(path, rgb_model=rgb, flow_model=flow, config=extract,
                                                     progress=progress)
            except StpnError as error:
                progress.finish(None)
                failures += 1
                print(f"error: {error}", flush=True)
                continue
            progress.finish(features.num_snippets)
            features.fingerprint = prints
            write_video(features_root, _SPLIT, features)
        if features.rgb.shape[1] != model.feature_dim:  # reused features of a run for another model
            failures += 1
            print(f"error: {features.where}: {features.rgb.shape[1]} values per snippet but {model.source} reads "
                  f"{model.feature_dim}", flush=True)
            continue
        # A model on RGB alone reads no flow input; the graph still takes one.
        flow_features = features.flow if features.flow is not None else np.zeros_like(features.rgb)
        # One video per call: extraction dominates, and batch 1 with the 400 grid keeps one XLA shape.
        output = model.predict([features.rgb], [flow_features], [sps])[0]
        results[features.video_id] = output["detections"]
        if figures:
            _figure(plot_timeline, os.path.join(out_dir, "figures", f"{features.video_id}.png"),
                    features.video_id, output, model.classes, model.streams, seconds_per_snippet=sps,
                    duration=features.duration, truth=truth.get(features.video_id))
    if results:
        write_results(os.path.join(out_dir, "detections.json"), results_envelope(results))
    print(f"localize: {len(results)} video{'' if len(results) == 1 else 's'} localized ({len(reused)} from earlier "
          f"features), {failures} failed "
          f"-> {out_dir}; features kept in {os.path.join(features_root, _SPLIT)} (reused by a rerun, read by "
          "build-dataset)", flush=True)
    return 1 if failures else 0


def _figure(plot_timeline, path: str, video_id: str, output: Mapping[str, Any], classes: Sequence[str],
            streams: Sequence[str], *, seconds_per_snippet: float, duration: float,
            truth: Sequence[Any] | None) -> None:
    length = int(output["length"])
    # Each grid position is drawn at its center, g + 0.5, converted by the timeline module.
    times = timeline.grid_to_seconds(np.arange(length) + 0.5, length=length,
                                     num_snippets=int(output["num_snippets"]),
                                     seconds_per_snippet=seconds_per_snippet, duration=duration)
    attention, tcam = output["attention"], output["tcam"]                     # [S, T], [S, T, C]
    # T-CAM curves of the five best-scored detected classes and the annotated ones: twenty curves (a weak
    # model detects every class somewhere) would hide each other.
    ranked = sorted(output["detections"], key=lambda d: -d["score"])
    detected = sorted(set(list(dict.fromkeys(d["label"] for d in ranked))[:5])
                      | {str(getattr(t, "label", "")) for t in truth or []} & set(classes))
    # Weighted T-CAM (eq. 5-6), psi = lambda * sigmoid(a), averaged over the streams.
    psi = np.mean(attention[:, :, None] / (1.0 + np.exp(-tcam)), axis=0)   # [T, C]
    plot_timeline(path, video_id=video_id, times=np.asarray(times),
                  attention={s.upper(): attention[i] for i, s in enumerate(streams)},
                  tcam={name: psi[:, list(classes).index(name)] for name in detected},
                  detections=output["detections"], ground_truth=truth, duration=duration,
                  tcam_label="weighted T-CAM")

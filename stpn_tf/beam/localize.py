"""Batch localization of many per-video feature files with Beam's RunInference.

    <features>/<split>/meta/*.json -> read rgb/flow npy -> RunInference(STPN streams, batched per
    worker) -> localization per video -> detections.json (ActivityNet format)

The model handler loads the trained streams of a training work directory once per worker
(RunInference shares it between threads). Runner flags: see docs/extract.md.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from stpn_tf.errors import StpnError


class _Streams:
    """The loaded models (a class, not a dict: Beam's model sharing keeps a weak reference)."""

    def __init__(self, classes: list[str], streams: dict[str, Any]):
        self.classes = classes
        self.streams = streams


class StpnStreamsHandler(ModelHandler):
    """RunInference handler: per-video features -> per-stream attention, T-CAM and probabilities.

    Examples are dicts {"rgb": [L, D], "flow": [L, D], "meta": {...}}; predictions are dicts
    {stream: {"attention": [T], "tcam": [T, C], "probabilities": [C]}, "meta": {...}}.
    """

    def __init__(self, workdir: str, grid_size: int | None = 400):
        super().__init__()
        self._workdir = workdir
        self._grid_size = grid_size

    def load_model(self) -> "_Streams":
        from stpn_tf.model.stpn import STREAMS, load_classes, load_stream_model

        return _Streams(load_classes(self._workdir),
                        {s: load_stream_model(self._workdir, s) for s in STREAMS})

    def run_inference(self, batch: Sequence[Mapping[str, Any]], model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> Iterable[dict[str, Any]]:
        from stpn_tf.extract.localize_videos import stream_outputs

        for example in batch:
            prediction = {s: stream_outputs(m, example[s], self._grid_size)
                          for s, m in model.streams.items()}
            prediction["meta"] = example["meta"]
            prediction["classes"] = model.classes
            yield prediction



def _read_features(meta_path: str) -> tuple[str, dict[str, Any]]:
    with open(meta_path) as handle:
        try:
            meta = json.load(handle)
        except json.JSONDecodeError as error:
            raise StpnError(f"{meta_path}: malformed JSON ({error})") from None
    split_dir = os.path.dirname(os.path.dirname(meta_path))
    video_id = meta["video_id"]
    streams = {s: np.load(os.path.join(split_dir, s, f"{video_id}.npy")) for s in ("rgb", "flow")}
    return video_id, {**streams, "meta": meta}


def _localize_one(item: tuple[str, Mapping[str, Any]], params: Mapping[str, Any]):
    from stpn_tf import inference
    from stpn_tf import timeline

    video_id, prediction = item
    meta = prediction["meta"]
    raw: dict[str, Any] = {
        "video_id": np.asarray([video_id]),
        "length": np.asarray([prediction["rgb"]["attention"].shape[0]], np.int32),
        "num_snippets": np.asarray([meta["num_snippets"]], np.int32),
        "seconds_per_snippet": np.asarray(
            [timeline.seconds_per_snippet(meta["fps"], meta["stride_frames"])], np.float32),
        "duration": np.asarray([meta["duration"]], np.float32),
        "classes": np.asarray(prediction["classes"]),
    }
    for stream in ("rgb", "flow"):
        for key, value in prediction[stream].items():
            raw[f"{stream}/{key}"] = value[None]
    results = inference.localize_raw(raw, batch_size=1, jit_compile=False, **dict(params))
    return video_id, results["results"][video_id]


def _write(detections: Mapping[str, Any], path: str) -> None:
    from stpn_tf import inference

    inference.write_results({"version": inference.RESULTS_VERSION, "results": dict(sorted(detections.items())),
                             "external_data": {"used": True,
                                               "details": "I3D features pretrained on Kinetics"}}, path)


def run_beam_localize(*, features: str, split: str, workdir: str, output: str,
                      grid_size: int | None = 400, localize_params: Mapping[str, Any] | None = None,
                      pipeline_args: Sequence[str] = ()) -> int:
    """Localizes every video of `<features>/<split>` (the `stpn extract` layout) on Beam.

    Args:
        features: Root of the per-video npy layout.
        split: Split sub-directory.
        workdir: Training work directory with both streams.
        output: detections JSON to write.
        grid_size: Test grid (400) or None for all snippets.
        localize_params: Keywords of stpn_tf.localize.localize.
        pipeline_args: Beam flags; default the DirectRunner.

    Returns:
        0.
    """
    metas = sorted(glob.glob(os.path.join(features, split, "meta", "*.json")))
    if not metas:
        raise StpnError(f"{os.path.join(features, split, 'meta')}: no feature meta files")
    args = list(pipeline_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DirectRunner")
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        _ = (pipeline
             | "Metas" >> beam.Create(metas)
             | "Read" >> beam.Map(_read_features)
             | "Streams" >> RunInference(KeyedModelHandler(StpnStreamsHandler(workdir, grid_size)))
             | "Localize" >> beam.Map(_localize_one, params=dict(localize_params or {}))
             | "Collect" >> beam.combiners.ToDict()
             | "Write" >> beam.Map(_write, path=output))
    print(f"beam localize: {len(metas)} videos -> {output}", flush=True)
    return 0

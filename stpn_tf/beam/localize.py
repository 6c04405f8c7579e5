"""Batch localization of many per-video feature files with Beam's RunInference over an STPN export.

    driver: <features>/<split>/meta/*.json sorted, cut into batches of `batch_size` videos (numbered)
      -> Reshuffle -> ReadBatchDoFn (rgb/flow npy; bad files counted and skipped; a batch whose videos all
         have a valid part from an earlier run skips the model)
      -> RunInference(KeyedModelHandler(StpnExportHandler)): one batch per call, padded along time, through
         the export's `serving_default` signature (both streams + localization in one graph)
      -> WritePartsDoFn: each video's detections to <output>.parts/<video>.json (atomic)
      -> ToDict -> detections JSON (ActivityNet format, written atomically); then the parts are removed.

The export's graph localizes with bounds derived from the data as graph ops (stpn_tf.localize.serving), so a
batch costs what `stpn localize` costs and its detections are byte-identical to it.

The driver, not the runner's bundling, decides which videos share a padded call, so the detections are
byte-identical on every runner and worker count (the DirectRunner's `--direct_num_workers=2
--direct_running_mode=multi_processing` included). A rerun after a killed pipeline reuses every batch
whose parts are all there and valid (same model files and batch size, same feature file sizes and
modification times) and runs the others again, whole, so that their videos see the same padded calls.

The handler loads the export with plain `tf.saved_model.load` once per worker process (RunInference
shares it between the worker's threads). A training work directory also works in place of the export
(the same graph is then built in memory with the default localization settings), but the export is the
documented path: it is what a Dataflow/Flink/Spark worker needs without the training outputs.

Command line (runner flags after the script's own, optionally behind `--`):

    python -m stpn_tf.beam.localize --features=F --split=test --export_dir=E --output=detections.json
        -- --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp ...

    Direct, 2 processes: --direct_num_workers=2 --direct_running_mode=multi_processing
    Flink:  --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=DOCKER --parallelism=N
    Spark:  --runner=SparkRunner --spark_master_url=spark://HOST:7077 --environment_type=DOCKER
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
from absl import logging
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from stpn_tf.artifacts import detection_parts, feature_dir
from stpn_tf.beam import run_main, run_pipeline, split_pipeline_args
from stpn_tf.core.errors import StpnError

_NAMESPACE = "stpn"
DEFAULT_BATCH_SIZE = 8


class StpnExportHandler(ModelHandler):
    """RunInference handler over an STPN export; one example is one whole batch of videos.

    Examples are lists [(video_id, {"rgb": float32 [L, D], "flow": float32 [L, D], "seconds_per_snippet":
    float, ...}), ...] of at most `batch_size` videos, formed in the driver (`batches`); predictions are
    lists [(video_id, meta path, input state, detections)], detections as ActivityNet result lists
    [{"label", "score", "segment": [s, e]}, ...] in seconds. Each batch is padded along time (num_snippets
    gives the true lengths; stpn_tf.inference.runner.ServingModel.predict) and filled up to `batch_size`
    videos, so the export's compiled localization sees few distinct shapes. Because the driver, not the
    runner's bundling, decides which videos share a call, every runner and worker count computes the same
    inputs, hence the same detections.
    """

    def __init__(self, export_dir: str, *, batch_size: int = DEFAULT_BATCH_SIZE):
        if batch_size < 1:
            raise StpnError(f"batch_size must be >= 1, got {batch_size}")
        # One driver-formed batch per model call.
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._export_dir = export_dir
        self._batch_size = batch_size

    def load_model(self):
        from stpn_tf.inference.runner import load_serving_model

        return load_serving_model(self._export_dir)

    def run_inference(self, batch: Sequence[Sequence[tuple[str, Mapping[str, Any]]]], model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> Iterable[list[tuple[Any, ...]]]:
        predictions = []
        for videos in batch:
            outputs = model.predict([e["rgb"] for _, e in videos], [e["flow"] for _, e in videos],
                                    [e["seconds_per_snippet"] for _, e in videos], pad_batch_to=self._batch_size)
            predictions.append([(video_id, e["meta"], e["inputs"], output["detections"])
                                for (video_id, e), output in zip(videos, outputs)])
        return predictions

    def get_num_bytes(self, batch: Sequence[Sequence[tuple[str, Mapping[str, Any]]]]) -> int:
        return sum(e["rgb"].nbytes + e["flow"].nbytes for videos in batch for _, e in videos)

    def get_metrics_namespace(self) -> str:
        return "StpnRunInference"


def batches(metas: Sequence[str], batch_size: int) -> list[tuple[int, list[str]]]:
    """The model calls of a run: consecutive `batch_size` meta files in sorted order, numbered."""
    ordered = sorted(metas)
    return [(k, ordered[i:i + batch_size]) for k, i in enumerate(range(0, len(ordered), batch_size))]


class ReadBatchDoFn(beam.DoFn):
    """(batch number, meta paths) -> one batch of (video_id, example) for RunInference.

    A batch whose videos all have a valid part in `parts_dir` (a finished earlier run) goes to the
    "done" output as (video_id, detections) without being read or run. A bad video is logged on one
    line, counted and skipped (and remembered as a part, so a rerun does not retry it unless its files
    change).
    """

    def __init__(self, *, feature_dim: int | None, parts_dir: str, fingerprint: str):
        self._feature_dim = feature_dim
        self._parts_dir = parts_dir
        self._fingerprint = fingerprint
        self._failed = Metrics.counter(_NAMESPACE, "failed_videos")
        self._reused = Metrics.counter(_NAMESPACE, "reused_videos")

    def process(self, element: tuple[int, Sequence[str]]):
        number, metas = element
        parts = [detection_parts.read_part(self._parts_dir, m, self._fingerprint) for m in metas]
        if all(p is not None for p in parts):
            for part in parts:
                self._reused.inc()
                if "error" in part:
                    logging.error("error: %s", part["error"])
                    self._failed.inc()
                else:
                    yield beam.pvalue.TaggedOutput("done", (part["video_id"], part["detections"]))
            return
        # Recomputed whole, so that every video of the batch sees the same padded call as in a run that
        # was never interrupted (videos already written keep their part).
        videos = []
        for meta_path in metas:
            inputs = detection_parts.input_state(meta_path)
            try:
                video_id, example = _example(meta_path, feature_dim=self._feature_dim)
            except StpnError as error:
                logging.error("error: %s", error)
                self._failed.inc()
                detection_parts.write_part(self._parts_dir, meta_path, self._fingerprint, inputs, error=str(error))
                continue
            videos.append((video_id, {**example, "meta": meta_path, "inputs": inputs}))
        if videos:
            yield number, videos


class WritePartsDoFn(beam.DoFn):
    """(batch number, [(video_id, meta, inputs, detections)]) -> (video_id, detections), saved as parts first."""

    def __init__(self, *, parts_dir: str, fingerprint: str):
        self._parts_dir = parts_dir
        self._fingerprint = fingerprint
        self._localized = Metrics.counter(_NAMESPACE, "localized_videos")

    def process(self, element: tuple[int, Sequence[tuple[str, str, Mapping[str, Any], list]]]):
        _, predictions = element
        for video_id, meta_path, inputs, detections in predictions:
            if detection_parts.read_part(self._parts_dir, meta_path, self._fingerprint) is None:
                detection_parts.write_part(self._parts_dir, meta_path, self._fingerprint, inputs,
                                           video_id=video_id, detections=detections)
            self._localized.inc()
            yield video_id, detections


def _example(meta_path: str, *, feature_dim: int | None = None) -> tuple[str, dict[str, Any]]:
    """One finished video of the `stpn extract` layout as a RunInference example, given its meta JSON.

    Returns:
      (video_id, {"rgb": float32 [L, D], "flow": float32 [L, D], "seconds_per_snippet": float}).

    Raises:
      StpnError: what `feature_dir.read_video(..., complete=True)` refuses (malformed meta, missing or
        unreadable npy, shapes that disagree with each other, the meta or `feature_dim`, an empty
        video, non-finite values).
    """
    from stpn_tf.localize import timeline

    features = feature_dir.read_video(*feature_dir.locate(meta_path), complete=True, feature_dim=feature_dim)
    return features.video_id, {"rgb": features.rgb, "flow": features.flow,
                               "seconds_per_snippet": timeline.seconds_per_snippet(features.fps,
                                                                                    features.stride_frames)}


def _write(detections: Mapping[str, Any], path: str) -> None:
    from stpn_tf.artifacts.results import results_envelope, write_results

    write_results(path, results_envelope(detections, sort=True))


def _export_feature_dim(export_dir: str) -> int | None:
    """D from the export's description (None for a work directory: then the graph itself checks)."""
    from stpn_tf.artifacts.export_dir import is_export_dir, read_export_info

    if not is_export_dir(export_dir):
        if not os.path.isdir(export_dir):
            raise StpnError(f"{export_dir}: no such export directory")
        return None
    return read_export_info(export_dir).feature_dim


def run_beam_localize(*, features: str, split: str, export_dir: str, output: str,
                      batch_size: int = DEFAULT_BATCH_SIZE, parts_dir: str | None = None,
                      pipeline_args: Sequence[str] = ()) -> int:
    """Localizes every video of `<features>/<split>` (the `stpn extract` layout) on Beam.

    Args:
      features: Root of the per-video npy layout (<features>/<split>/{rgb,flow,meta}/).
      split: Split sub-directory.
      export_dir: `stpn export` directory (or a training work directory; default settings then).
      output: Detections JSON to write (ActivityNet format; written to a temporary name and renamed).
      batch_size: Videos per `serving_default` call.
      parts_dir: Where each finished video's detections are kept until `output` is written (default
        `<output>.parts`); a rerun after a killed pipeline reuses the batches found complete there
        (same model files, batch size and feature files) and redoes the others. Removed once `output`
        is written.
      pipeline_args: Beam flags, e.g. ["--runner=DataflowRunner", ...] or ["--direct_num_workers=2",
        "--direct_running_mode=multi_processing"]; default the single-process DirectRunner.

    Returns:
      0 if every video was localized, 1 if any feature file was bad (each is logged on one line and
      counted in the Beam metric stpn/failed_videos; the others are still written).
    """
    if batch_size < 1:
        raise StpnError(f"batch_size must be >= 1, got {batch_size}")
    metas = feature_dir.meta_files(features, split)
    if not metas:
        raise StpnError(f"{os.path.join(features, split, feature_dir.META)}: no feature meta files "
                        "(run `stpn extract` first)")
    feature_dim = _export_feature_dim(export_dir)
    parts_dir = detection_parts.open_parts_dir(parts_dir or detection_parts.default_parts_dir(output))
    fingerprint = detection_parts.model_fingerprint(export_dir, batch_size)
    args = list(pipeline_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DirectRunner")
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    read = (pipeline
            | "Batches" >> beam.Create(batches(metas, batch_size))
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadBatchDoFn(feature_dim=feature_dim, parts_dir=parts_dir,
                                                 fingerprint=fingerprint)).with_outputs("done", main="todo"))
    localized = (read.todo
                 | "Localize" >> RunInference(KeyedModelHandler(StpnExportHandler(export_dir, batch_size=batch_size)))
                 | "SaveParts" >> beam.ParDo(WritePartsDoFn(parts_dir=parts_dir, fingerprint=fingerprint)))
    _ = ((localized, read.done)
         | "AllVideos" >> beam.Flatten()
         | "Collect" >> beam.combiners.ToDict()
         | "Write" >> beam.Map(_write, path=output))
    result = run_pipeline(pipeline)
    failed = _counter(result, "failed_videos")
    reused = _counter(result, "reused_videos")
    detection_parts.remove_parts_dir(parts_dir)  # `output` holds every finished video now
    print(f"beam localize: {len(metas) - failed} videos localized, {failed} failed ({reused} reused from an "
          f"earlier run) -> {output}", flush=True)
    return 1 if failed else 0


def _counter(result, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_namespace(_NAMESPACE).with_name(name))
    return int(sum(c.committed or 0 for c in counters["counters"]))


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Splits a command line into run_beam_localize keywords and Beam pipeline flags.

    Flags this script does not know (and everything after a bare `--`) go to Beam.
    """
    parser = argparse.ArgumentParser(prog="python -m stpn_tf.beam.localize",
                                     description="Localize per-video features with an STPN export on Beam.")
    parser.add_argument("--features", required=True, help="root of the `stpn extract` layout")
    parser.add_argument("--split", default="test", help="split sub-directory (default: test)")
    parser.add_argument("--export_dir", required=True, help="`stpn export` directory")
    parser.add_argument("--output", required=True, help="detections JSON to write")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE, help="videos per model call")
    parser.add_argument("--parts_dir", help="finished videos of an unfinished run (default: <output>.parts)")
    return split_pipeline_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 with a one-line message on input errors)."""
    return run_main(parse_args, run_beam_localize, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Batch localization of many per-video feature files with Beam's RunInference over an STPN export.

    <features>/<split>/meta/*.json -> ReadFeatures (rgb/flow npy; bad files counted and skipped)
      -> RunInference(KeyedModelHandler(StpnExportHandler)): batches of videos, padded along time, through
         the export's `serving_default` signature (both streams + localization in one graph)
      -> ToDict -> detections JSON (ActivityNet format, written atomically)

The handler loads the export with plain `tf.saved_model.load` once per worker process (RunInference
shares it between the worker's threads). A training work directory also works in place of the export
(the same graph is then built in memory with the default localization settings), but the export is the
documented path: it is what a Dataflow/Flink/Spark worker needs without the training outputs.

Command line (runner flags after the script's own, optionally behind `--`):

    python -m stpn_tf.beam.localize --features=F --split=test --export_dir=E --output=detections.json
        -- --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp ...
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from absl import logging
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from stpn_tf.beam import run_main, split_pipeline_args
from stpn_tf.errors import StpnError

_NAMESPACE = "stpn"
DEFAULT_BATCH_SIZE = 8


class StpnExportHandler(ModelHandler):
    """RunInference handler over an STPN export.

    Examples are dicts {"rgb": float32 [L, D], "flow": float32 [L, D], "seconds_per_snippet": float};
    predictions are the ActivityNet result lists [{"label", "score", "segment": [s, e]}, ...] in seconds.
    Each batch is padded along time (num_snippets gives the true lengths; stpn_tf.serving.model.
    ServingModel.predict) and filled up to `batch_size` videos, so the export's compiled localization sees
    few distinct shapes.
    """

    def __init__(self, export_dir: str, *, batch_size: int = DEFAULT_BATCH_SIZE):
        if batch_size < 1:
            raise StpnError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(min_batch_size=1, max_batch_size=batch_size)
        self._export_dir = export_dir
        self._batch_size = batch_size

    def load_model(self):
        from stpn_tf.serving.model import load_serving_model

        return load_serving_model(self._export_dir)

    def run_inference(self, batch: Sequence[Mapping[str, Any]], model: Any,
                      inference_args: Mapping[str, Any] | None = None) -> Iterable[list[dict[str, Any]]]:
        outputs = model.predict([e["rgb"] for e in batch], [e["flow"] for e in batch],
                                [e["seconds_per_snippet"] for e in batch], pad_batch_to=self._batch_size)
        return [output["detections"] for output in outputs]

    def get_num_bytes(self, batch: Sequence[Mapping[str, Any]]) -> int:
        return sum(e["rgb"].nbytes + e["flow"].nbytes for e in batch)

    def get_metrics_namespace(self) -> str:
        return "StpnRunInference"


class ReadFeaturesDoFn(beam.DoFn):
    """meta JSON path -> (video_id, example); a bad video is logged on one line, counted and skipped."""

    def __init__(self, feature_dim: int | None):
        self._feature_dim = feature_dim
        self._failed = Metrics.counter(_NAMESPACE, "failed_videos")

    def process(self, meta_path: str):
        try:
            yield read_features(meta_path, feature_dim=self._feature_dim)
        except StpnError as error:
            logging.error("error: %s", error)
            self._failed.inc()


def read_features(meta_path: str, *, feature_dim: int | None = None) -> tuple[str, dict[str, Any]]:
    """Reads one video of the `stpn extract` layout, given its meta JSON.

    Returns:
      (video_id, {"rgb": float32 [L, D], "flow": float32 [L, D], "seconds_per_snippet": float}).

    Raises:
      StpnError: malformed meta, missing or unreadable npy, shapes that disagree with each other, the meta
        or `feature_dim`, an empty video, non-finite values.
    """
    from stpn_tf.postprocess import timeline

    try:
        with open(meta_path) as handle:
            meta = json.load(handle)
        video_id, fps, stride = str(meta["video_id"]), float(meta["fps"]), int(meta["stride_frames"])
        num_snippets = int(meta["num_snippets"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise StpnError(f"{meta_path}: malformed feature meta JSON ({type(error).__name__}: {error})") from None
    except OSError as error:
        raise StpnError(f"{meta_path}: cannot read ({error.strerror})") from None
    split_dir = os.path.dirname(os.path.dirname(meta_path))
    streams = {}
    for stream in ("rgb", "flow"):
        path = os.path.join(split_dir, stream, f"{video_id}.npy")
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise StpnError(f"{path}: missing (listed by {meta_path})") from None
        except (OSError, ValueError) as error:
            raise StpnError(f"{path}: not a readable npy array ({error})") from None
        if array.ndim != 2 or array.shape[0] != num_snippets or array.shape[0] == 0:
            raise StpnError(f"{path}: shape {list(array.shape)}, expected [{num_snippets}, D] as its meta says"
                            + (" (an empty video)" if num_snippets == 0 else ""))
        if feature_dim is not None and array.shape[1] != feature_dim:
            raise StpnError(f"{path}: {array.shape[1]} values per snippet, the model expects {feature_dim}")
        if not np.all(np.isfinite(array)):
            raise StpnError(f"{path}: contains NaN or infinite values")
        streams[stream] = array.astype(np.float32, copy=False)
    if streams["rgb"].shape != streams["flow"].shape:
        raise StpnError(f"{split_dir}: {video_id} has rgb {list(streams['rgb'].shape)} but flow "
                        f"{list(streams['flow'].shape)}")
    return video_id, {**streams, "seconds_per_snippet": timeline.seconds_per_snippet(fps, stride)}


def _write(detections: Mapping[str, Any], path: str) -> None:
    from stpn_tf.io.results import results_envelope, write_results

    write_results(path, results_envelope(detections, sort=True))


def _export_feature_dim(export_dir: str) -> int | None:
    """D from the export's description (None for a work directory: then the graph itself checks)."""
    from stpn_tf.io.export_dir import is_export_dir, read_export_info

    if not is_export_dir(export_dir):
        if not os.path.isdir(export_dir):
            raise StpnError(f"{export_dir}: no such export directory")
        return None
    return read_export_info(export_dir).feature_dim


def run_beam_localize(*, features: str, split: str, export_dir: str, output: str,
                      batch_size: int = DEFAULT_BATCH_SIZE, pipeline_args: Sequence[str] = ()) -> int:
    """Localizes every video of `<features>/<split>` (the `stpn extract` layout) on Beam.

    Args:
      features: Root of the per-video npy layout (<features>/<split>/{rgb,flow,meta}/).
      split: Split sub-directory.
      export_dir: `stpn export` directory (or a training work directory; default settings then).
      output: Detections JSON to write (ActivityNet format; written to a temporary name and renamed).
      batch_size: Videos per `serving_default` call.
      pipeline_args: Beam flags, e.g. ["--runner=DataflowRunner", ...]; default the DirectRunner.

    Returns:
      0 if every video was localized, 1 if any feature file was bad (each is logged on one line and
      counted in the Beam metric stpn/failed_videos; the others are still written).
    """
    meta_dir = os.path.join(features, split, "meta")
    metas = sorted(glob.glob(os.path.join(meta_dir, "*.json")))
    if not metas:
        raise StpnError(f"{meta_dir}: no feature meta files (run `stpn extract` first)")
    feature_dim = _export_feature_dim(export_dir)
    args = list(pipeline_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DirectRunner")
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    _ = (pipeline
         | "Metas" >> beam.Create(metas)
         | "Spread" >> beam.Reshuffle()
         | "Read" >> beam.ParDo(ReadFeaturesDoFn(feature_dim))
         | "Localize" >> RunInference(KeyedModelHandler(StpnExportHandler(export_dir, batch_size=batch_size)))
         | "Collect" >> beam.combiners.ToDict()
         | "Write" >> beam.Map(_write, path=output))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(_NAMESPACE).with_name("failed_videos"))
    failed = sum(c.committed or 0 for c in counters["counters"])
    print(f"beam localize: {len(metas) - failed} videos localized, {failed} failed -> {output}", flush=True)
    return 1 if failed else 0


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
    return split_pipeline_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 with a one-line message on input errors)."""
    return run_main(parse_args, run_beam_localize, argv)


if __name__ == "__main__":
    sys.exit(main())

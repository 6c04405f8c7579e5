"""Feature extraction and TFRecord building as one Apache Beam pipeline (the optional `beam` extra).

    video paths -> Reshuffle -> ExtractDoFn (decode, TV-L1, both I3D streams; models loaded once per
    worker in setup) -+-> per-video npy layout  <out>/<split>/{rgb,flow,meta}/<video>   (same files as
                      |                          `stpn extract`)
                      +-> tf.train.Example (stpn_tf.data.tfrecord.make_example)
                          -> WriteToTFRecord <dataset>/<split>-SSSSS-of-NNNNN.tfrecord
    then, in the driver: <dataset>/dataset.json (+ ground_truth.json when annotations are given).

The same code runs on the DirectRunner (default) and on Dataflow, Flink or Spark runners; runner flags
go in `pipeline_args` (docs/extract.md). Command line (runner flags after the script's own, optionally
behind `--`):

    python -m stpn_tf.beam.extract --videos /videos --out features --dataset_dir dataset --split test
        --rgb_model /models/i3d_rgb --flow_model /models/i3d_flow -- --runner=DataflowRunner ...

A failing video is logged on one line and counted in the Beam metric stpn/failed_videos; the run returns
1 when it is non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from absl import logging
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from stpn_tf.beam import run_main, split_pipeline_args
from stpn_tf.errors import StpnError
from stpn_tf.extract import flow as flow_lib
from stpn_tf.extract import pipeline as extract_lib

_NAMESPACE = "stpn"


class ExtractDoFn(beam.DoFn):
    """path -> VideoFeatures; failures go to the "failed" output as one-line messages."""

    def __init__(self, *, models: extract_lib.I3DModels, config: extract_lib.ExtractConfig):
        self._models_spec = models
        self._config = config
        self._models = None
        self._failed = Metrics.counter(_NAMESPACE, "failed_videos")
        self._written = Metrics.counter(_NAMESPACE, "extracted_videos")
        self._snippets = Metrics.counter(_NAMESPACE, "extracted_snippets")
        self._dim = Metrics.distribution(_NAMESPACE, "feature_dim")

    def setup(self):
        # Once per worker process: loading I3D is far too slow to repeat per element.
        self._models = self._models_spec.load()

    def process(self, path: str):
        rgb_model, flow_model = self._models
        try:
            features = extract_lib.extract_video(path, rgb_model=rgb_model, flow_model=flow_model,
                                                 config=self._config)
        except StpnError as error:
            self._failed.inc()
            logging.error("%s", error)
            yield beam.pvalue.TaggedOutput("failed", str(error))
            return
        self._written.inc()
        self._snippets.inc(features.num_snippets)
        self._dim.update(int(features.rgb.shape[1]))
        yield features


def _write_npy(features: extract_lib.VideoFeatures, out: str, split: str) -> str:
    extract_lib.write_video_features(out, split, features)
    return features.video_id


def _to_example(features: extract_lib.VideoFeatures, split: str,
                labels: Mapping[str, Sequence[int]]) -> bytes:
    from stpn_tf.data.tfrecord import make_example

    return make_example(video_id=features.video_id, subset=split, rgb=features.rgb, flow=features.flow,
                        labels=list(labels.get(features.video_id, ())), duration=features.duration,
                        fps=features.fps, stride_frames=features.stride_frames)


def _labels_from_annotations(annotations: str | None, annotations_subset: str | None,
                             classes: Sequence[str], video_ids: Sequence[str]):
    """(labels by video id, VideoRecords of the given videos) from ground truth, or empty."""
    if annotations is None:
        return {}, []
    from stpn_tf.io.ground_truth import load_ground_truth

    records = load_ground_truth(annotations, annotations_subset, single_subset=False)
    index = {name: i for i, name in enumerate(classes)}
    wanted = set(video_ids)
    labels: dict[str, list[int]] = {}
    kept = []
    for record in records:
        if record.video_id not in wanted:
            continue
        unknown = [label for label in record.labels if label not in index]
        if unknown:
            raise StpnError(f"{annotations}: video {record.video_id} has labels {unknown} that are not "
                            "in the class list")
        labels[record.video_id] = sorted(index[label] for label in record.labels)
        kept.append(record)
    return labels, kept


def _metric(result, name: str):
    metrics = result.metrics().query(MetricsFilter().with_namespace(_NAMESPACE).with_name(name))
    for kind in ("counters", "distributions"):
        if metrics[kind]:
            return metrics[kind][0].committed
    return None


def run_beam_extract(*, videos: Sequence[str], out: str, dataset_dir: str, split: str,
                     models: extract_lib.I3DModels, config: extract_lib.ExtractConfig = extract_lib.ExtractConfig(),
                     annotations: str | None = None, annotations_subset: str | None = None,
                     classes: Sequence[str] | None = None, dataset_name: str = "videos",
                     num_shards: int = 4, pipeline_args: Sequence[str] = ()) -> int:
    """Extracts features of `videos` and builds the TFRecord split `split` in one Beam pipeline.

    Args:
        videos: Video files and/or directories of video files (expanded in the driver).
        out: Root of the per-video npy layout (as `stpn extract --out`).
        dataset_dir: Dataset directory receiving `<split>-*.tfrecord`, dataset.json and, with
            annotations, ground_truth.json. Other splits already there are kept if their settings
            (classes, feature size, fps, stride) match.
        split: Split name ("train" / "test").
        models: The I3D feature extractors.
        config: Frame rate, stacks, crop and TV-L1 settings (as `stpn extract`).
        annotations: Optional ground truth (ActivityNet-layout JSON or THUMOS14 toolkit folder) giving
            the video-level labels; videos without annotations get no labels.
        annotations_subset: Subset of `annotations` to read ("validation" / "test" for THUMOS14).
        classes: Class names (label index order); default THUMOS14's 20 classes.
        dataset_name: "name" in dataset.json.
        num_shards: TFRecord shards of this split.
        pipeline_args: Beam flags, e.g. ["--runner=DataflowRunner", "--project=...", ...];
            default the DirectRunner.

    Returns:
        0 if every video succeeded, 1 if any failed.
    """
    from stpn_tf.data import annotations as ann
    from stpn_tf.data.build import file_entry

    if not split or "/" in split or split.startswith("."):
        raise StpnError(f"invalid split name {split!r}")
    if num_shards < 1:
        raise StpnError(f"num_shards must be >= 1, got {num_shards}")
    paths = extract_lib.expand_videos(videos)
    class_names = list(classes) if classes else list(ann.THUMOS14_CLASSES)
    video_ids = [extract_lib.video_id_from_path(p) for p in paths]
    labels, records = _labels_from_annotations(annotations, annotations_subset, class_names, video_ids)
    os.makedirs(dataset_dir, exist_ok=True)
    args = list(pipeline_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        # Pin the in-process runner: newer Beam releases may otherwise pick a runner that fetches
        # a binary on first use.
        args.append("--runner=DirectRunner")
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    extracted = (
        pipeline
        | "Videos" >> beam.Create(paths)
        | "Spread" >> beam.Reshuffle()  # one video per work item, so workers share the load
        | "Extract" >> beam.ParDo(ExtractDoFn(models=models, config=config)).with_outputs("failed", main="features"))
    _ = extracted.features | "WriteNpy" >> beam.Map(_write_npy, out=out, split=split)
    _ = (extracted.features
         | "ToExample" >> beam.Map(_to_example, split=split, labels=labels)
         | "WriteTFRecord" >> beam.io.WriteToTFRecord(
             os.path.join(dataset_dir, split), file_name_suffix=".tfrecord", num_shards=num_shards))
    result = pipeline.run()
    result.wait_until_finish()

    failed = _metric(result, "failed_videos") or 0
    written = _metric(result, "extracted_videos") or 0
    snippets = _metric(result, "extracted_snippets") or 0
    dims = _metric(result, "feature_dim")
    if written:
        if dims is None or dims.min != dims.max:
            raise StpnError(f"{dataset_dir}: videos have different feature sizes "
                            f"({getattr(dims, 'min', '?')}..{getattr(dims, 'max', '?')})")
        _write_dataset(dataset_dir, split=split, name=dataset_name, classes=class_names, feature_dim=int(dims.max),
                       fps=config.fps, stride_frames=config.stride_frames, num_videos=int(written),
                       num_snippets=int(snippets), num_shards=num_shards,
                       sources=[file_entry(p) for p in paths if os.path.isfile(p)], records=records)
    print(f"beam extract: {written} videos written, {failed} failed -> {out}/{split} and "
          f"{os.path.join(dataset_dir, split)}-*.tfrecord", flush=True)
    return 1 if failed else 0


def _write_dataset(dataset_dir: str, *, split: str, name: str, classes: Sequence[str], feature_dim: int,
                   fps: float, stride_frames: int, num_videos: int, num_snippets: int, num_shards: int,
                   sources: list[dict[str, Any]], records: Sequence[Any]) -> None:
    """Writes (or updates this split in) dataset.json, and ground_truth.json, atomically."""
    from stpn_tf.data import annotations as ann
    from stpn_tf.data import tfrecord
    from stpn_tf.io import dataset_dir as dataset_io

    split_info = dataset_io.SplitInfo(num_videos=num_videos, num_snippets=num_snippets,
                                      shards=[tfrecord.shard_name(split, i, num_shards) for i in range(num_shards)])
    info = dataset_io.DatasetInfo(name=name, layout="beam_extract", classes=list(classes), feature_dim=feature_dim,
                                  fps=float(fps), stride_frames=int(stride_frames), splits={})
    if dataset_io.is_dataset_dir(dataset_dir):
        old = dataset_io.read_dataset_info(dataset_dir)
        if not old.same_features(info):
            raise StpnError(f"{dataset_io.metadata_path(dataset_dir)}: existing dataset has other classes, feature "
                            "size, fps or stride; use a new dataset directory")
        info = dataclasses.replace(info, splits=old.splits, sources=old.sources)
    info = info.with_split(split, split_info, sources)
    if records:
        truth_path = dataset_io.ground_truth_path(dataset_dir)
        merged = {}
        if os.path.exists(truth_path):
            merged = {r.video_id: r for r in ann.read_activitynet_json(truth_path) if r.subset != split}
        for record in records:
            merged[record.video_id] = dataclasses.replace(record, subset=split)
        ann.write_activitynet_json(list(merged.values()), truth_path)
    dataset_io.write_dataset_info(dataset_dir, info)


def _input_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0,1), got {text!r}") from None
    return low, high


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Splits a command line into run_beam_extract keywords and Beam pipeline flags.

    Flags this script does not know (and everything after a bare `--`) go to Beam.
    """
    parser = argparse.ArgumentParser(prog="python -m stpn_tf.beam.extract",
                                     description="Extract I3D features and build a TFRecord split on Beam.")
    parser.add_argument("--videos", nargs="+", required=True, help="video files and/or folders")
    parser.add_argument("--out", required=True, help="root of the per-video npy layout to write")
    parser.add_argument("--dataset_dir", required=True, help="dataset directory for the TFRecord split")
    parser.add_argument("--split", required=True, help="split name (train / test)")
    parser.add_argument("--rgb_model", required=True, help="RGB I3D: hub handle or SavedModel directory")
    parser.add_argument("--flow_model", required=True, help="flow I3D: hub handle or SavedModel directory")
    parser.add_argument("--annotations", help="ActivityNet JSON or THUMOS14 toolkit folder (labels)")
    parser.add_argument("--annotations_subset", help="subset of --annotations to read")
    parser.add_argument("--classes", nargs="+", help="class names (default THUMOS14's 20)")
    parser.add_argument("--dataset_name", default="videos")
    parser.add_argument("--num_shards", type=int, default=4)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--stride_frames", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    defaults = flow_lib.TVL1Options()
    for name in ("scales", "warps", "inner_iterations", "outer_iterations"):
        parser.add_argument(f"--tvl1_{name}", type=int, default=getattr(defaults, name))
    parser.add_argument("--rgb_feature_tensor")
    parser.add_argument("--flow_feature_tensor")
    parser.add_argument("--rgb_input_range", type=_input_range, help="LOW,HIGH the RGB model expects")
    parser.add_argument("--flow_input_range", type=_input_range, help="LOW,HIGH the flow model expects")
    known, pipeline_args = split_pipeline_args(parser, argv)
    models = extract_lib.I3DModels(**{k: known.pop(k) for k in (
        "rgb_model", "flow_model", "rgb_feature_tensor", "flow_feature_tensor", "rgb_input_range", "flow_input_range")})
    tvl1 = flow_lib.TVL1Options(**{name: known.pop(f"tvl1_{name}") for name in (
        "scales", "warps", "inner_iterations", "outer_iterations")})
    config = extract_lib.ExtractConfig(fps=known.pop("fps"), stride_frames=known.pop("stride_frames"),
                                       batch_size=known.pop("batch_size"), tvl1=tvl1)
    return {**known, "models": models, "config": config}, pipeline_args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 with a one-line message on input errors)."""
    return run_main(parse_args, run_beam_extract, argv)


if __name__ == "__main__":
    sys.exit(main())

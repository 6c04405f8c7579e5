"""A training work directory of real STPN models with random weights (no training)."""

from __future__ import annotations

import os

import numpy as np

from stpn_tf.artifacts.workdir import WorkDir
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

"""Random raw model outputs, the dict `stpn localize --save_raw` writes (stpn_tf.artifacts.raw_outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stpn_tf.artifacts.annotations import Segment, make_record

# The classes and localization bounds of the sweep, tune and report tests (class "F" never in the truth).
SWEEP_CLASSES = ["A", "B", "C", "D", "E", "F"]
SWEEP_BOUNDS = dict(interpolation=4, max_detections=60, max_components_per_class=16)


def random_raw(classes: Sequence[str], *, num_videos: int, t: int, seed: int = 0,
               lengths: tuple[int, int] | None = None, num_snippets: tuple[int, int] = (3, 40),
               smooth: bool = False, max_probability: float = 1.0) -> dict[str, np.ndarray]:
    """Raw outputs of both streams for `num_videos` videos on a grid of `t` positions, 0.64 s snippets.

    Args:
      classes: The C class names.
      num_videos: B.
      t: Grid length T.
      seed: Seed of the numpy generator (the draws' order is fixed: the arrays depend on it alone).
      lengths: [low, high) of the valid grid positions per video; None: every video fills the grid.
      num_snippets: [low, high) of the videos' real snippet counts (their durations follow).
      smooth: Smooth the attention over 3 positions (so components span several positions).
      max_probability: Video probabilities are uniform in [0, max_probability).

    Returns:
      video_id [B], length [B], num_snippets [B], seconds_per_snippet [B], classes [C], duration [B] and per
      stream `<s>/attention` [B, T], `<s>/tcam` [B, T, C], `<s>/probabilities` [B, C].
    """
    rng = np.random.default_rng(seed)
    c = len(classes)
    raw = {"video_id": np.array([f"v{i}" for i in range(num_videos)]),
           "length": (np.full(num_videos, t, np.int32) if lengths is None
                      else rng.integers(lengths[0], lengths[1], num_videos).astype(np.int32)),
           "num_snippets": rng.integers(num_snippets[0], num_snippets[1], num_videos).astype(np.int32),
           "seconds_per_snippet": np.full(num_videos, 0.64, np.float32), "classes": np.array(classes)}
    raw["duration"] = (raw["num_snippets"] * 0.64).astype(np.float32)
    kernel = np.ones(3) / 3
    for s in ("rgb", "flow"):
        attention = rng.uniform(0, 1, (num_videos, t))
        if smooth:
            attention = np.apply_along_axis(lambda x: np.convolve(x, kernel, "same"), 1, attention)
        raw[f"{s}/attention"] = attention.astype(np.float32)
        raw[f"{s}/tcam"] = rng.normal(0, 2, (num_videos, t, c)).astype(np.float32)
        raw[f"{s}/probabilities"] = rng.uniform(0, max_probability, (num_videos, c)).astype(np.float32)
    return raw


def sweep_raw(num_videos: int = 9, t: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """The sweep tests' raw outputs: SWEEP_CLASSES, 6..T valid positions, smooth attention."""
    return random_raw(SWEEP_CLASSES, num_videos=num_videos, t=t, seed=seed, lengths=(6, t + 1),
                      num_snippets=(10, 60), smooth=True, max_probability=.5)


def sweep_ground_truth(raw: dict[str, np.ndarray], seed: int = 1) -> list:
    """1 to 3 random segments in every video of `raw` but the last; class "F" never appears (an unscored
    label)."""
    rng = np.random.default_rng(seed)
    records = []
    for i, video in enumerate(raw["video_id"][:-1]):
        duration = float(raw["duration"][i])
        segments = []
        for _ in range(rng.integers(1, 4)):
            start = float(rng.uniform(0, duration * .7))
            segments.append(Segment(start, float(min(duration, start + rng.uniform(1, 8))),
                                    str(rng.choice(SWEEP_CLASSES[:5]))))
        records.append(make_record(str(video), "validation", duration, segments))
    return records

"""The public Python API (re-exported lazily by `stpn_tf`): load a trained run, localize features held in
memory, evaluate detections.

    model = stpn_tf.load("work/demo")     # a training work directory (its recorded settings) or an export
    detections = model.localize({"video_1": {"rgb": rgb, "flow": flow}}, seconds_per_snippet=16 / 25)
    result = stpn_tf.evaluate(detections, ground_truth="work/demo/dataset/ground_truth.json", subset="test")

TensorFlow is imported by `load` only: `evaluate` is numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stpn_tf.artifacts.ground_truth import load_ground_truth
from stpn_tf.artifacts.results import results_envelope
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.core.errors import StpnError
from stpn_tf.evaluation import evaluate_detections

if TYPE_CHECKING:  # both packages import TensorFlow: only `load` needs them
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.localize.config import LocalizerConfig


def recorded_settings(workdir: str) -> tuple[GridConfig | None, LocalizerConfig | None]:
    """The test grid and localization settings a work directory's record holds (what `stpn localize
    --workdir=W` uses without flags); (None, None) for a work directory that records no config."""
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.localize.config import LocalizerConfig

    record = WorkDir(workdir).read_record()
    section = (record.config.get("localize") if record and record.config else None) or {}
    if not section:
        return None, None
    names = {f.name for f in dataclasses.fields(LocalizerConfig)}
    localizer = LocalizerConfig.from_dict({k: v for k, v in section.items() if k in names})
    grid = GridConfig(length=int(section.get("num_snippets", GridConfig().length)),
                      all_snippets=bool(section.get("all_snippets", False)))
    return grid, localizer


class Model:
    """A trained STPN run ready to localize features: the streams, the test grid and the localization.

    Attributes:
      classes: C class names, in the models' order.
      feature_dim: D, the features per snippet of each stream.
      streams: The model streams inside ("rgb", "flow" or both).
      localizer_config: The localization settings in use (LocalizerConfig).
      source: The work directory or export it was loaded from.
    """

    def __init__(self, serving: Any):
        self._serving = serving
        self.classes = list(serving.classes)
        self.feature_dim = serving.feature_dim
        self.streams = tuple(serving.streams)
        self.localizer_config = serving.localizer_config
        self.source = serving.source

    def localize(self, videos: Mapping[str, Mapping[str, np.ndarray]], *, seconds_per_snippet: float,
                 batch_size: int = 16) -> dict[str, Any]:
        """Detections for videos given as features in memory.

        Args:
          videos: {video id: {"rgb": float [T, D], "flow": float [T, D]}}; T may differ between videos. A
            stream the model does not use may be left out.
          seconds_per_snippet: Seconds between snippets (stride frames / fps: 16 / 25 for THUMOS14's I3D).
          batch_size: Videos per call of the graph.

        Returns:
          ActivityNet results {"results": {video id: [{"label", "score", "segment": [start s, end s]}]}},
          what `evaluate` takes.

        Raises:
          StpnError: Naming the video whose features have the wrong shape or miss a stream.
        """
        ids = list(videos)
        arrays = {}
        for video in ids:
            streams = videos[video]
            given = {s: np.asarray(streams[s], np.float32) for s in ("rgb", "flow") if s in streams}
            needed = [s for s in self.streams if s in ("rgb", "flow")] or ["rgb", "flow"]
            missing = [s for s in needed if s not in given]
            if missing:
                raise StpnError(f"localize: video {video!r} has no {', '.join(missing)} features (the model reads "
                                f"{', '.join(needed)})")
            length = next(iter(given.values())).shape[0] if given else 0
            for s, a in given.items():
                if a.ndim != 2 or a.shape[1] != self.feature_dim or a.shape[0] != length or length == 0:
                    raise StpnError(f"localize: video {video!r}: {s} features have shape {list(a.shape)}; expected "
                                    f"[T, {self.feature_dim}] with the same T > 0 for every stream")
            zeros = np.zeros((length, self.feature_dim), np.float32)
            arrays[video] = (given.get("rgb", zeros), given.get("flow", zeros))
        results: dict[str, list[dict[str, Any]]] = {}
        for lo in range(0, len(ids), batch_size):
            chunk = ids[lo:lo + batch_size]
            outs = self._serving.predict([arrays[v][0] for v in chunk], [arrays[v][1] for v in chunk],
                                         [float(seconds_per_snippet)] * len(chunk))
            results.update({v: out["detections"] for v, out in zip(chunk, outs)})
        return results_envelope(results)


def load(path: str, *, localizer_config: LocalizerConfig | None = None) -> Model:
    """Loads a training work directory or an `stpn export` directory.

    Args:
      path: Work directory (`stpn train` / `stpn demo`) or export directory (`stpn export`).
      localizer_config: For a work directory, other localization settings; None uses the settings it records
        (as `stpn localize --workdir` does). An export always uses its own (they are compiled into it).

    Raises:
      StpnError: One line naming the directory when it is neither, or is incomplete.
    """
    from stpn_tf.artifacts.export_dir import is_export_dir
    from stpn_tf.inference.runner import load_serving_model

    if is_export_dir(path):
        if localizer_config is not None:
            raise StpnError(f"{path}: an export's localization settings are compiled into it; export again with "
                            "other settings (`stpn export --config.localize.KEY=VALUE`)")
        return Model(load_serving_model(path))
    grid, recorded = recorded_settings(path) if WorkDir(path).is_workdir() else (None, None)
    return Model(load_serving_model(path, grid=grid, localizer_config=localizer_config or recorded))


def evaluate(detections: Mapping[str, Any], ground_truth: str | Sequence[Any], *, subset: str | None = None,
             protocol: str = "activitynet", tiou_thresholds: Sequence[float] | None = None,
             unknown_labels_as_fp: bool = False) -> dict[str, Any]:
    """mAP of detections against ground truth (numpy only).

    Args:
      detections: ActivityNet results ({"results": {video: [...]}}, e.g. from Model.localize) or its body.
      ground_truth: An ActivityNet-layout JSON file, a THUMOS14 toolkit folder, a `stpn:` path, or records
        (stpn_tf.artifacts.ground_truth.load_ground_truth).
      subset: The subset of a ground-truth file to evaluate against ("test", "validation", ...).
      protocol: "activitynet" or "th14kit" (the THUMOS14 toolkit's).
      tiou_thresholds: None: the protocol's defaults (0.1 ... 0.9 for THUMOS14-style data).
      unknown_labels_as_fp: Count predicted labels absent from the ground truth as false positives (of
        unscored classes) instead of raising; needed when the ground truth is a few videos of all classes.

    Returns:
      {"mAP": [T], "average_mAP", "tiou_thresholds": [T], "per_class_ap": {class: [T]}, ...} as in
      stpn_tf.evaluation.evaluate_detections.
    """
    records = load_ground_truth(ground_truth, subset) if isinstance(ground_truth, str) else list(ground_truth)
    return evaluate_detections(records, detections, protocol=protocol, tiou_thresholds=tiou_thresholds,
                               unknown_labels_as_fp=unknown_labels_as_fp, log_warnings=False)

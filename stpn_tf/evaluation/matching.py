"""Ground truth and predictions as flat arrays, and the two overlap measures (spec section 4).

Both protocols (stpn_tf.evaluation.activitynet, .th14kit) score an `EvalData`. `ground_truth_data` flattens
the ground truth and `join_predictions` adds predictions given as flat arrays: `build_eval_data` does both
for ActivityNet-style predictions (checking every one), stpn_tf.tuning.sweep for the Localizer's padded
outputs, so both number videos and labels the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stpn_tf.artifacts import annotations
from stpn_tf.artifacts.annotations import VideoRecord
from stpn_tf.core.errors import StpnError


@dataclasses.dataclass
class EvalData:
    """Ground truth and predictions as flat arrays.

    Attributes:
      classes: Scored class names (those with ground truth), sorted; index = class id.
      video_ids: All video names; GT videos first, then prediction-only videos.
      gt_video, gt_label: [G] int; gt_start, gt_end: [G] float64 (file order within each video).
      amb_video: [A] int; amb_start, amb_end: [A] float64 (Ambiguous segments).
      pred_video, pred_label: [P] int (label >= len(classes) for labels absent from the ground truth);
      pred_start, pred_end, pred_score: [P] float64, in input order.
      extra_labels: Names of prediction labels absent from the ground truth (ids len(classes)...).
    """

    classes: list[str]
    video_ids: list[str]
    gt_video: np.ndarray
    gt_label: np.ndarray
    gt_start: np.ndarray
    gt_end: np.ndarray
    amb_video: np.ndarray
    amb_start: np.ndarray
    amb_end: np.ndarray
    pred_video: np.ndarray
    pred_label: np.ndarray
    pred_start: np.ndarray
    pred_end: np.ndarray
    pred_score: np.ndarray
    extra_labels: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def as_int(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def ground_truth_data(records: Sequence[VideoRecord]) -> EvalData:
    """Ground-truth records as flat arrays, with no predictions yet (`join_predictions` adds them).

    Raises:
      StpnError: When a video appears twice.
    """
    classes = sorted({s.label for r in records for s in r.segments})
    class_index = {c: i for i, c in enumerate(classes)}
    video_ids: list[str] = []
    video_index: dict[str, int] = {}
    gt_v, gt_l, gt_s, gt_e, amb_v, amb_s, amb_e = [], [], [], [], [], [], []
    for r in records:
        if r.video_id in video_index:
            raise StpnError(f"ground truth: video {r.video_id!r} appears twice")
        video_index[r.video_id] = len(video_ids)
        video_ids.append(r.video_id)
        for s in r.segments:
            gt_v.append(video_index[r.video_id])
            gt_l.append(class_index[s.label])
            gt_s.append(s.start)
            gt_e.append(s.end)
        for s, e in r.ambiguous:
            amb_v.append(video_index[r.video_id])
            amb_s.append(s)
            amb_e.append(e)
    return EvalData(classes=classes, video_ids=video_ids, gt_video=as_int(gt_v), gt_label=as_int(gt_l),
                    gt_start=as_float(gt_s), gt_end=as_float(gt_e), amb_video=as_int(amb_v),
                    amb_start=as_float(amb_s), amb_end=as_float(amb_e), pred_video=as_int([]),
                    pred_label=as_int([]), pred_start=as_float([]), pred_end=as_float([]),
                    pred_score=as_float([]))


def _first_appearance(ids: np.ndarray) -> np.ndarray:
    """The distinct values of `ids` in the order they first appear."""
    values, first = np.unique(ids, return_index=True)
    return values[np.argsort(first, kind="stable")]


def join_predictions(
    truth: EvalData,
    *,
    video_names: Sequence[str],
    video: np.ndarray,
    label_names: Sequence[str],
    label: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    score: np.ndarray,
    unknown_labels_as_fp: bool = False,
    source: str = "predictions",
) -> EvalData:
    """`truth` (from `ground_truth_data`) with P predictions, given as flat arrays in ranking-tie order.

    Videos absent from the ground truth get ids after its videos, labels absent from it ids after its
    classes, each in the order they first appear among the predictions.

    Args:
      truth: Ground truth without predictions.
      video_names: Names the `video` entries index.
      video: [P] int, index into `video_names` per prediction.
      label_names: Names the `label` entries index.
      label: [P] int, index into `label_names` per prediction.
      start, end, score: [P] floats (seconds, seconds, confidence).
      unknown_labels_as_fp: Keep labels absent from the ground truth as false positives of unscored
        classes instead of raising.
      source: Name used in messages.

    Raises:
      StpnError: On labels absent from the ground truth, unless `unknown_labels_as_fp`.
    """
    video, label = as_int(video), as_int(label)
    truth_video = {v: i for i, v in enumerate(truth.video_ids)}
    video_of = as_int([truth_video.get(str(v), -1) for v in video_names])
    video_ids = list(truth.video_ids)
    for v in _first_appearance(video):
        if video_of[v] < 0:
            video_of[v] = len(video_ids)
            video_ids.append(str(video_names[v]))
    class_index = {c: i for i, c in enumerate(truth.classes)}
    label_of = as_int([class_index.get(str(c), -1) for c in label_names])
    extra: list[str] = []
    for c in _first_appearance(label):
        if label_of[c] < 0:
            label_of[c] = len(truth.classes) + len(extra)
            extra.append(str(label_names[c]))
    if extra and not unknown_labels_as_fp:
        shown = ", ".join(repr(x) for x in extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise StpnError(
            f"{source}: {len(extra)} predicted label(s) absent from the ground truth ({shown}); "
            "fix the label names, or pass --unknown_labels_as_fp to count them as false positives"
        )
    return dataclasses.replace(truth, video_ids=video_ids, pred_video=video_of[video], pred_label=label_of[label],
                               pred_start=as_float(start), pred_end=as_float(end), pred_score=as_float(score),
                               extra_labels=extra)


def build_eval_data(
    records: Sequence[VideoRecord],
    predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    unknown_labels_as_fp: bool = False,
    source: str = "predictions",
) -> EvalData:
    """Flattens ground truth records and ActivityNet-style predictions {video: [{label, score, segment}]}.

    Raises:
      StpnError: On malformed predictions, or labels absent from the ground truth unless
        `unknown_labels_as_fp` (then they are kept as false positives of unscored classes).
    """
    truth = ground_truth_data(records)
    video_names = list(predictions)
    label_index: dict[str, int] = {}
    p_v, p_l, p_s, p_e, p_c = [], [], [], [], []
    for i, (vid, dets) in enumerate(predictions.items()):
        where = f"{source}: video {vid!r}"
        if not isinstance(dets, (list, tuple)):
            raise StpnError(f"{where}: expected a list of detections, got {type(dets).__name__}")
        for j, det in enumerate(dets):
            dwhere = f"{where}, detection {j}"
            if not isinstance(det, Mapping):
                raise StpnError(f"{dwhere}: expected an object with 'label', 'score', 'segment'")
            for key in ("label", "score", "segment"):
                if key not in det:
                    raise StpnError(f"{dwhere}: missing field {key!r}")
            label, score, seg = det["label"], det["score"], det["segment"]
            if not isinstance(label, str):
                raise StpnError(f"{dwhere}: 'label' must be a string, got {label!r}")
            if isinstance(score, bool) or not isinstance(score, (int, float, np.floating, np.integer)):
                raise StpnError(f"{dwhere}: 'score' must be a number, got {score!r}")
            if not math.isfinite(float(score)):
                raise StpnError(f"{dwhere}: score is {score} (NaN and infinite scores are not allowed)")
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise StpnError(f"{dwhere}: 'segment' must be [start, end], got {seg!r}")
            s, e = annotations.parse_interval(seg[0], seg[1], dwhere)
            check_start(s, e, dwhere)
            p_v.append(i)
            p_l.append(label_index.setdefault(label, len(label_index)))
            p_s.append(s)
            p_e.append(e)
            p_c.append(float(score))
    return join_predictions(truth, video_names=video_names, video=as_int(p_v), label_names=list(label_index),
                            label=as_int(p_l), start=as_float(p_s), end=as_float(p_e), score=as_float(p_c),
                            unknown_labels_as_fp=unknown_labels_as_fp, source=source)


def check_start(start: float, end: float, where: str) -> None:
    """A predicted segment starting before 0 s is a broken file, refused as start > end is."""
    if start < 0:
        raise StpnError(f"{where}: segment [{start:g}, {end:g}] starts before 0 seconds")


def segment_tiou(ps, pe, gs, ge) -> np.ndarray:
    """ActivityNet tIoU, broadcasting: inter / (len_pred + len_gt - inter); 0 when the union is 0."""
    inter = np.clip(np.minimum(pe, ge) - np.maximum(ps, gs), 0.0, None)
    union = (ge - gs) + (pe - ps) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def kit_overlap(as_, ae, bs, be) -> np.ndarray:
    """THUMOS14 kit overlap, broadcasting: intersection / hull length, 0 unless intersection > 0."""
    inter = np.minimum(ae, be) - np.maximum(as_, bs)
    hull = np.maximum(ae, be) - np.minimum(as_, bs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inter > 0, inter / np.where(inter > 0, hull, 1.0), 0.0)


def group_slots(keys: np.ndarray):
    """Stable grouping: order, unique keys, group id per sorted item, slot within the group."""
    order = np.argsort(keys, kind="stable")
    uniq, first, counts = np.unique(keys[order], return_index=True, return_counts=True)
    gid = np.repeat(np.arange(len(uniq)), counts)
    slot = np.arange(len(order)) - first[gid]
    return order, uniq, gid, slot, counts

"""Scoring detections with either official protocol (spec section 4), and the `stpn evaluate` command.

The protocols are stpn_tf.evaluation.activitynet (spec 4.1) and stpn_tf.evaluation.th14kit (spec 4.2);
both are checked against plain-loop statements in tests/reference_evaluation.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from absl import logging

from stpn_tf.artifacts.annotations import VideoRecord
from stpn_tf.core.errors import StpnError
from stpn_tf.evaluation.activitynet import activitynet_ap
from stpn_tf.evaluation.formats import load_predictions
from stpn_tf.evaluation.matching import build_eval_data
from stpn_tf.core.tables import format_table
from stpn_tf.evaluation.th14kit import th14kit_ap
from stpn_tf.evaluation.thresholds import check_thresholds, default_tiou_thresholds, range_averages
from stpn_tf.core.atomic import atomic_write_json
from stpn_tf.artifacts.ground_truth import load_ground_truth
from stpn_tf.artifacts.results import results_body

PROTOCOLS = ("activitynet", "th14kit")
AP_FUNCTIONS = {"activitynet": activitynet_ap, "th14kit": th14kit_ap}


def protocols_of(protocol: str) -> list[str]:
    """The protocols a `--protocol` value names ("both" is both)."""
    if protocol == "both":
        return list(PROTOCOLS)
    if protocol not in AP_FUNCTIONS:
        raise StpnError(f"unknown protocol {protocol!r}; expected 'activitynet', 'th14kit' or 'both'")
    return [protocol]


def evaluate_detections(
    ground_truth: Sequence[VideoRecord],
    predictions: Mapping[str, Any],
    *,
    protocol: str = "activitynet",
    tiou_thresholds: Sequence[float] | None = None,
    unknown_labels_as_fp: bool = False,
    source: str = "predictions",
    log_warnings: bool = True,
) -> dict:
    """Evaluates in-memory detections against ground truth records with one protocol.

    Args:
      ground_truth: Records of the evaluated subset (e.g. from stpn_tf.artifacts.ground_truth.load_ground_truth).
      predictions: ActivityNet results object ({"results": {video: [{"label", "score", "segment": [s, e]}]}})
        or just its "results" mapping.
      protocol: "activitynet" or "th14kit".
      tiou_thresholds: Thresholds; None picks `default_tiou_thresholds`.
      unknown_labels_as_fp: Keep predicted labels absent from the ground truth as false positives of
        unscored classes (they cannot change any scored class's AP) instead of raising.
      source: Name used in messages (e.g. the predictions file).
      log_warnings: Also log the warnings (they are always in the result).

    Returns:
      {"protocol", "tiou_thresholds": [T], "mAP": [T], "average_mAP", "average_mAP_ranges": {"lo:hi": x},
       "per_class_ap": {class: [T]}, "num_videos", "num_videos_without_predictions", "num_ground_truth",
       "num_predictions", "warnings": [str]}.
    """
    if protocol not in AP_FUNCTIONS:
        raise StpnError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS} or 'both'")
    results = results_body(predictions, source)
    gt_ids = {r.video_id for r in ground_truth}
    predicted_ids = [video for video, dets in results.items() if dets]
    if predicted_ids and gt_ids.isdisjoint(predicted_ids):
        raise StpnError(f"{source}: none of its {len(predicted_ids)} video(s) with predictions is in the ground truth "
                        f"({len(gt_ids)} videos): wrong subset or ground-truth file?")
    data = build_eval_data(ground_truth, results, unknown_labels_as_fp=unknown_labels_as_fp, source=source)
    if data.num_classes == 0:
        raise StpnError("ground truth has no action segments to evaluate against")
    thr = default_tiou_thresholds(ground_truth, protocol) if tiou_thresholds is None else check_thresholds(
        tiou_thresholds)
    warnings = []
    if len(data.pred_label) == 0:
        warnings.append(f"{source}: no predictions; every class scores AP 0")
    num_gt_videos = len(ground_truth)
    annotated = [r.video_id for r in ground_truth if r.segments]
    unpredicted = [v for v in annotated if not results.get(v)]
    if unpredicted and len(data.pred_label):
        warnings.append(f"{source}: {len(unpredicted)} of the {len(annotated)} ground-truth videos with actions have "
                        f"no predictions (e.g. {unpredicted[0]}); their segments count as misses")
    outside = len({int(v) for v in data.pred_video if v >= num_gt_videos})
    if outside:
        warnings.append(
            f"{source}: predictions on {outside} video(s) absent from the ground truth subset count as false positives"
        )
    if data.extra_labels:
        n = int(np.sum(data.pred_label >= data.num_classes))
        warnings.append(
            f"{source}: {n} prediction(s) with {len(data.extra_labels)} label(s) absent from the ground truth "
            "counted as false positives (of unscored classes)"
        )
    if log_warnings:
        for w in warnings:
            logging.warning(w)
    ap = AP_FUNCTIONS[protocol](data, thr)
    m_ap = ap.mean(axis=0)
    return {
        "protocol": protocol,
        "tiou_thresholds": [float(t) for t in thr],
        "mAP": [float(x) for x in m_ap],
        "average_mAP": float(m_ap.mean()),
        "average_mAP_ranges": range_averages(thr, m_ap),
        "per_class_ap": {c: [float(x) for x in ap[i]] for i, c in enumerate(data.classes)},
        "num_videos": num_gt_videos,
        "num_videos_without_predictions": len(unpredicted),
        "num_ground_truth": int(len(data.gt_label)),
        "num_predictions": int(len(data.pred_label)),
        "warnings": warnings,
    }


def run_evaluate(
    *,
    ground_truth: str,
    predictions: str,
    subset: str | None = None,
    protocol: str = "activitynet",
    tiou_thresholds: Sequence[float] | None = None,
    unknown_labels_as_fp: bool = False,
    json_out: str | None = None,
    det_txt: str | None = None,
    out: TextIO | None = None,
) -> list[dict]:
    """`stpn evaluate`: loads files, evaluates, prints the table, writes --json_out atomically.

    Args:
      ground_truth: ActivityNet / BaS-Net JSON file, or the THUMOS14 toolkit txt folder.
      predictions: ActivityNet results JSON, or toolkit result txt.
      subset: Ground truth subset (stpn_tf.artifacts.ground_truth: toolkit folder "test" by default).
      protocol: "activitynet", "th14kit" or "both".
      tiou_thresholds: None for the defaults (see `default_tiou_thresholds`).
      unknown_labels_as_fp: Count predicted labels absent from the ground truth as false positives.
      json_out: Optional output JSON: one result object, or a list of two for "both".
      det_txt: UCF101 id list for toolkit result txt; defaults to <ground_truth folder>/det.txt.
      out: Stream for the table (stdout by default).

    Returns:
      One result dict per protocol (see `evaluate_detections`).
    """
    out = sys.stdout if out is None else out
    if json_out and not os.path.isdir(os.path.dirname(os.path.abspath(json_out))):
        raise StpnError(f"{json_out}: output directory does not exist")
    protocols = protocols_of(protocol)
    records = load_ground_truth(ground_truth, subset)
    if det_txt is None and os.path.isdir(ground_truth) and os.path.exists(os.path.join(ground_truth, "det.txt")):
        det_txt = os.path.join(ground_truth, "det.txt")
    preds = load_predictions(predictions, det_txt=det_txt, unknown_labels_as_fp=unknown_labels_as_fp)
    results = [evaluate_detections(records, preds, protocol=p, tiou_thresholds=tiou_thresholds,
                                   unknown_labels_as_fp=unknown_labels_as_fp, source=predictions,
                                   log_warnings=False)
               for p in protocols]
    out.write(format_table(results) + "\n")
    if json_out:
        atomic_write_json(json_out, results if protocol == "both" else results[0])
    return results

"""Sweeping localization settings over saved raw outputs: mAP per setting, without rerunning the models."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from stpn_tf.data.annotations import VideoRecord
from stpn_tf.evaluation.evaluate import evaluate_detections
from stpn_tf.postprocess.localizer import Localizer, LocalizerConfig
from stpn_tf.predict import localize_raw


def sweep_thresholds(raw: Mapping[str, np.ndarray], ground_truth: Sequence[VideoRecord], *,
                     base: LocalizerConfig, class_thresholds: Sequence[float], tcam_thresholds: Sequence[float],
                     streams: Sequence[str] = ("rgb", "flow"), protocol: str = "activitynet",
                     tiou_thresholds: Sequence[float] | None = None, unknown_labels_as_fp: bool = False,
                     batch_size: int = 16, out: TextIO | None = None) -> list[dict[str, Any]]:
    """The mAP of every (class threshold, T-CAM threshold) pair; prints one line per setting to `out`.

    Returns:
      [{"class_threshold", "tcam_threshold", "average_mAP", "mAP": [T], "tiou_thresholds": [T]}] in sweep
      order; the best setting is the one with the largest average_mAP (first on ties).
    """
    rows = []
    if out is not None:
        print(f"{'class_thr':>10}{'tcam_thr':>10}{'avg mAP':>10}{'mAP@0.5':>10}", file=out)
    for ct, tt in itertools.product(class_thresholds, tcam_thresholds):
        config = base.replace(class_threshold=float(ct), tcam_threshold=float(tt))
        results = localize_raw(raw, Localizer(config), streams=streams, batch_size=batch_size)
        r = evaluate_detections(ground_truth, results, protocol=protocol, tiou_thresholds=tiou_thresholds,
                                unknown_labels_as_fp=unknown_labels_as_fp, log_warnings=False)
        row = {"class_threshold": float(ct), "tcam_threshold": float(tt), "average_mAP": r["average_mAP"],
               "mAP": r["mAP"], "tiou_thresholds": r["tiou_thresholds"]}
        rows.append(row)
        if out is not None:
            at_half = dict(zip([round(t, 6) for t in r["tiou_thresholds"]], r["mAP"])).get(0.5, float("nan"))
            print(f"{ct:>10g}{tt:>10g}{100 * r['average_mAP']:>10.2f}{100 * at_half:>10.2f}", file=out, flush=True)
    return rows


def best_setting(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The row with the highest average mAP (the first such row on ties)."""
    return max(rows, key=lambda r: r["average_mAP"])

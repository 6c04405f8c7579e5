"""The THUMOS14 toolkit protocol ("th14kit", spec section 4.2), vectorized numpy.

The semantics of the challenge's Matlab kit (TH14evalDet / TH14eventdetpr):
- Overlap = intersection / hull length (max end - min start), 0 unless the intersection is > 0.
- Per video and class, detections sorted by descending confidence (stable); each ground truth segment
  in file order takes the still-free detection of largest overlap (first one on ties) if that overlap
  is strictly greater than the threshold.
- Unmatched detections that overlap any Ambiguous segment of their video are dropped (neither TP
  nor FP).
- Detections are then ranked by descending confidence over all videos. Ties follow the 2014 kit's
  TH14eventdetpr.m: it concatenates all true positive confidences before all false positive ones
  (`conf=[tpconf fpconf]`) and sorts with Matlab's stable `sort(conf,'descend')`, so among equal
  confidences every true positive ranks before every false positive. Remaining ties keep the kit's
  concatenation order (video names sorted, then per-video order); they cannot change the AP. (A later
  modified kit orders all ties by video name instead; that can give a lower AP on tied confidences.)
- AP is 11-point: mean over recall points 0:0.1:1 (as Matlab's colon builds them) of the maximum
  precision at recall >= the point, 0 where there is none. A class without detections scores 0.

"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stpn_tf.evaluation.matching import EvalData, as_float, group_slots, kit_overlap


def matlab_colon(a: float, d: float, b: float) -> np.ndarray:
    """The floats Matlab's `a:d:b` produces (it builds the range symmetrically from both ends).

    E.g. 0:0.1:1 has 3*0.1 = 0.30000000000000004 but 1-3*0.1 = 0.7, unlike numpy's 0.7000000000000001.
    """
    n = int(math.floor((b - a) / d + 1e-10))
    out = np.empty(n + 1)
    k = np.arange(n // 2 + 1)
    out[k] = a + k * d
    out[n - k] = b - k * d
    if n % 2 == 0:
        out[n // 2] = (a + b) / 2
    return out


# Recall points of the kit's 11-point AP (`recallpoints=0:0.1:1` in Matlab).
TH14_RECALL_POINTS = matlab_colon(0.0, 0.1, 1.0)


def _eleven_point_ap(tp: np.ndarray, kept: np.ndarray, npos: int) -> float:
    """11-point AP over the kept entries of a ranked list ([N] bool tp and kept)."""
    hits = tp[kept]
    if hits.size == 0:
        return 0.0
    tp_cum = np.cumsum(hits).astype(np.float64)
    fp_cum = np.cumsum(~hits).astype(np.float64)
    rec = tp_cum / npos
    prec = tp_cum / (fp_cum + tp_cum)
    suffix_max = np.maximum.accumulate(prec[::-1])[::-1]
    first = np.searchsorted(rec, TH14_RECALL_POINTS, side="left")  # recall is non-decreasing
    p = np.where(first < len(rec), suffix_max[np.minimum(first, len(rec) - 1)], 0.0)
    return float(np.sum(p / len(TH14_RECALL_POINTS)))


def th14kit_ap(data: EvalData, tiou_thresholds: Sequence[float]) -> np.ndarray:
    """Per-class AP with the THUMOS14 toolkit protocol (vectorized).

    Among equal confidences true positives rank before false positives (the 2014 kit's stable sort of
    `[tpconf fpconf]`), so the ranking is built per threshold.

    Args:
      data: Flat ground truth and predictions.
      tiou_thresholds: [T] thresholds; a match needs overlap strictly greater than the threshold.

    Returns:
      [C, T] AP for the scored classes.
    """
    thr = as_float(tiou_thresholds)
    num_t, num_c = len(thr), data.num_classes
    ap = np.zeros((num_c, num_t))
    if num_c == 0:
        return ap
    scored = np.flatnonzero(data.pred_label < num_c)
    num_v = max(len(data.video_ids), 1)
    # Detections grouped by (class, video), descending confidence, ties in input order.
    d_idx = scored[np.lexsort((-data.pred_score[scored], data.pred_video[scored], data.pred_label[scored]))]
    d_key = data.pred_label[d_idx] * num_v + data.pred_video[d_idx]
    d_keys, d_first, d_counts = np.unique(d_key, return_index=True, return_counts=True)
    d_gid = np.repeat(np.arange(len(d_keys)), d_counts)
    d_slot = np.arange(len(d_idx)) - d_first[d_gid]
    n_groups, dmax = len(d_keys), int(d_counts.max()) if len(d_counts) else 0
    pad_s = np.zeros((n_groups, dmax))
    pad_e = np.zeros((n_groups, dmax))
    pad_s[d_gid, d_slot] = data.pred_start[d_idx]
    pad_e[d_gid, d_slot] = data.pred_end[d_idx]
    free = np.zeros((n_groups, num_t, dmax), bool)
    free[d_gid, :, d_slot] = True

    # Ground truth of groups that have detections, handled k-th segment (file order) of every group at once.
    gt_key = data.gt_label * num_v + data.gt_video
    pos = np.searchsorted(d_keys, gt_key)
    pos_c = np.minimum(pos, max(n_groups - 1, 0))
    has_det = (pos < n_groups) & (d_keys[pos_c] == gt_key) if n_groups else np.zeros(len(gt_key), bool)
    gts = np.flatnonzero(has_det)
    o, _, _, within, _ = group_slots(pos_c[gts])
    step_order = np.argsort(within, kind="stable")
    steps = np.bincount(within) if len(within) else np.zeros(0, int)
    start = 0
    for count in steps:
        gi = gts[o[step_order[start : start + count]]]
        start += count
        g = pos_c[gi]
        ov = kit_overlap(data.gt_start[gi, None], data.gt_end[gi, None], pad_s[g], pad_e[g])  # [n, D]
        cand = np.where(free[g], ov[:, None, :], -np.inf)  # [n, T, D]
        best = np.argmax(cand, axis=-1)
        vm = np.take_along_axis(cand, best[..., None], axis=-1)[..., 0]
        take = vm > thr[None, :]
        ni, ti = np.nonzero(take)
        free[g[ni], ti, best[ni, ti]] = False

    tp = ~free[d_gid, :, d_slot]  # [D_total, T] in group order
    # Unmatched detections overlapping an Ambiguous segment of their video are dropped.
    amb_hit = np.zeros(len(d_idx), bool)
    if len(data.amb_video) and len(d_idx):
        a_order = np.argsort(data.amb_video, kind="stable")
        a_v = data.amb_video[a_order]
        lo = np.searchsorted(a_v, data.pred_video[d_idx], "left")
        hi = np.searchsorted(a_v, data.pred_video[d_idx], "right")
        for k in range(int((hi - lo).max())):
            has = lo + k < hi
            j = a_order[np.minimum(lo + k, len(a_order) - 1)]
            inter = np.minimum(data.pred_end[d_idx], data.amb_end[j]) - np.maximum(
                data.pred_start[d_idx], data.amb_start[j]
            )
            amb_hit |= has & (inter > 0)
    kept = tp | ~amb_hit[:, None]

    # Global ranking as the kit's final stable sort of `[tpconf fpconf]`: confidence desc, then true
    # positives before false positives (which depends on the threshold), then the concatenation order
    # (video name, then per-video order: confidence desc, input order).
    name_rank = np.empty(len(data.video_ids), np.int64)
    name_rank[np.argsort(np.array(data.video_ids, dtype=object), kind="stable")] = np.arange(len(data.video_ids))
    d_label = data.pred_label[d_idx]
    neg_score = -data.pred_score[d_idx]
    base = np.lexsort((np.arange(len(d_idx)), name_rank[data.pred_video[d_idx]], neg_score, d_label))
    npos = np.bincount(data.gt_label, minlength=num_c)
    bounds = np.searchsorted(d_label[base], np.arange(num_c + 1))
    for t in range(num_t):
        # Re-sorting `base` by (label, confidence, FP flag) with base position as the last key keeps
        # the concatenation order inside each tie.
        rank = base[np.lexsort((np.arange(len(base)), ~tp[base, t], neg_score[base], d_label[base]))]
        for c in range(num_c):
            rc = rank[bounds[c] : bounds[c + 1]]
            ap[c, t] = _eleven_point_ap(tp[rc, t], kept[rc, t], int(npos[c]))
    return ap

"""The ActivityNet detection protocol ("activitynet", spec section 4.1), vectorized numpy.

The semantics of the official ActivityNet evaluator:
- tIoU = inter / (len_pred + len_gt - inter) in seconds, no +1; touching segments give 0.
- Per class and threshold, predictions in descending score; each takes, among the same video's ground
  truth of its class that is still unmatched at this threshold, the one of largest tIoU, provided
  `tIoU >= threshold` (the exact float given, e.g. numpy.linspace's 0.30000000000000004); otherwise it
  is a false positive. (This is the official "walk ground truth by descending tIoU, skip matched ones,
  stop at the first below threshold" loop, including its fall-back to the next-best ground truth.)
- All-point interpolated AP (precision envelope, summed over recall steps). Positives = every ground
  truth segment of the class. Only classes with ground truth are scored; a class without predictions
  scores 0 and stays in the mean. Predictions on videos without ground truth of their class are false
  positives.
- Ties. The official code sorts scores with an unstable sort, so tied scores give build-dependent
  results. Here every sort is stable: tied scores keep input order (earlier prediction first), and
  ground truth with equal tIoU is tried in file order. On inputs without tied scores / tIoUs the result
  equals the official one.
- One deliberate difference: two zero-length segments give 0/0 in the official code (NaN, which its
  loop then counts as a match); here tIoU is 0 when the union is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stpn_tf.evaluation.matching import EvalData, as_float, group_slots, segment_tiou


def all_point_ap(tp: np.ndarray, npos: int) -> np.ndarray:
    """All-point interpolated AP of ranked hits.

    Args:
      tp: [T, N] bool, true positive flags in rank order (everything else is a false positive).
      npos: Number of ground truth segments.

    Returns:
      [T] AP.
    """
    t = tp.shape[0]
    if tp.shape[1] == 0:
        return np.zeros(t)
    tp_cum = np.cumsum(tp, axis=1).astype(np.float64)
    fp_cum = np.cumsum(~tp, axis=1).astype(np.float64)
    rec = tp_cum / npos
    prec = tp_cum / (tp_cum + fp_cum)
    mprec = np.concatenate([np.zeros((t, 1)), prec, np.zeros((t, 1))], axis=1)
    mrec = np.concatenate([np.zeros((t, 1)), rec, np.ones((t, 1))], axis=1)
    env = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    # Steps where recall does not change contribute exactly 0.
    return np.sum((mrec[:, 1:] - mrec[:, :-1]) * env[:, 1:], axis=1)


def activitynet_ap(data: EvalData, tiou_thresholds: Sequence[float]) -> np.ndarray:
    """Per-class AP with the ActivityNet protocol (vectorized).

    Returns:
      [C, T] AP for the scored classes.
    """
    thr = as_float(tiou_thresholds)
    num_c = data.num_classes
    ap = np.zeros((num_c, len(thr)))
    if num_c == 0:
        return ap
    tp, bounds, npos = activitynet_hits(data, thr)
    for c in range(num_c):
        ap[c] = all_point_ap(tp[bounds[c] : bounds[c + 1]].T, int(npos[c]))
    return ap


def activitynet_hits(data: EvalData, tiou_thresholds: Sequence[float]):
    """The ActivityNet matching: true-positive flags of the scored predictions in rank order.

    Returns:
      (tp [P', T] bool, rows of class c are tp[bounds[c]:bounds[c + 1]] in descending score; bounds [C + 1];
      npos [C] ground-truth segments per class).
    """
    thr = as_float(tiou_thresholds)
    num_t, num_c = len(thr), data.num_classes
    scored = np.flatnonzero(data.pred_label < num_c)
    num_v = max(len(data.video_ids), 1)

    # Ground truth grouped by (class, video), file order kept inside a group.
    gt_key = data.gt_label * num_v + data.gt_video
    g_order, g_keys, g_gid, g_slot, g_counts = group_slots(gt_key)
    n_groups, gmax = len(g_keys), int(g_counts.max()) if len(g_counts) else 0
    pad_s = np.full((n_groups, gmax), np.nan)
    pad_e = np.full((n_groups, gmax), np.nan)
    valid = np.zeros((n_groups, gmax), bool)
    pad_s[g_gid, g_slot] = data.gt_start[g_order]
    pad_e[g_gid, g_slot] = data.gt_end[g_order]
    valid[g_gid, g_slot] = True

    # Rank predictions per class by descending score; ties keep input order (stable).
    idx = scored[np.lexsort((-data.pred_score[scored], data.pred_label[scored]))]
    tp = np.zeros((len(idx), num_t), bool)
    p_key = data.pred_label[idx] * num_v + data.pred_video[idx]
    pos = np.searchsorted(g_keys, p_key)
    pos_c = np.minimum(pos, max(n_groups - 1, 0))
    has_gt = (pos < n_groups) & (g_keys[pos_c] == p_key) if n_groups else np.zeros(len(idx), bool)
    m_rank = np.flatnonzero(has_gt)  # positions (in class rank order) of predictions that can match
    m_group = pos_c[m_rank]
    # Rank of each matchable prediction inside its (class, video) group; groups are independent, so
    # step k handles the k-th prediction of every group at once.
    o, _, _, within, _ = group_slots(m_group)
    step_order = np.argsort(within, kind="stable")
    steps = np.bincount(within) if len(within) else np.zeros(0, int)
    locked = np.zeros((n_groups, num_t, gmax), bool)
    start = 0
    for count in steps:
        sel = o[step_order[start : start + count]]
        start += count
        r = m_rank[sel]
        g = m_group[sel]
        p = idx[r]
        tiou = segment_tiou(data.pred_start[p, None], data.pred_end[p, None], pad_s[g], pad_e[g])
        ok = valid[g][:, None, :] & (tiou[:, None, :] >= thr[None, :, None]) & ~locked[g]
        best = np.argmax(np.where(ok, tiou[:, None, :], -np.inf), axis=-1)  # first max = file order
        hit = np.take_along_axis(ok, best[..., None], axis=-1)[..., 0]
        tp[r] = hit
        hi, ti = np.nonzero(hit)
        locked[g[hi], ti, best[hi, ti]] = True

    npos = np.bincount(data.gt_label, minlength=num_c)
    bounds = np.searchsorted(data.pred_label[idx], np.arange(num_c + 1))
    return tp, bounds, npos

"""Temporal action detection mAP, reproducing the two official protocols (spec section 4).

* ActivityNet protocol ("activitynet", spec 4.1), the semantics of the official ActivityNet evaluator:
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

* THUMOS14 toolkit protocol ("th14kit", spec 4.2), the semantics of the challenge's Matlab kit
  (TH14evalDet / TH14eventdetpr):
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

Both protocols are implemented twice: vectorized numpy (`activitynet_ap`, `th14kit_ap`) and a plain
loop reference (`activitynet_ap_loop`, `th14kit_ap_loop`) used by tests and bench/evaluate.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from absl import logging

from stpn_tf.data import annotations
from stpn_tf.data.annotations import VideoRecord
from stpn_tf.errors import StpnError

PROTOCOLS = ("activitynet", "th14kit")
THUMOS_TIOU = np.linspace(0.1, 0.9, 9)
ACTIVITYNET_TIOU = np.linspace(0.5, 0.95, 10)
# Ground truth with more classes than THUMOS14's 20 gets ActivityNet's thresholds by default.
_THUMOS_MAX_CLASSES = 20


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


# ----------------------------------------------------------------------------------------------------
# Flat arrays shared by both protocols.


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


def _i(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


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

    extra: dict[str, int] = {}
    p_v, p_l, p_s, p_e, p_c = [], [], [], [], []
    for vid, dets in predictions.items():
        where = f"{source}: video {vid!r}"
        if not isinstance(dets, (list, tuple)):
            raise StpnError(f"{where}: expected a list of detections, got {type(dets).__name__}")
        if dets and vid not in video_index:
            video_index[vid] = len(video_ids)
            video_ids.append(vid)
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
            if label in class_index:
                li = class_index[label]
            else:
                if label not in extra:
                    extra[label] = len(classes) + len(extra)
                li = extra[label]
            p_v.append(video_index[vid])
            p_l.append(li)
            p_s.append(s)
            p_e.append(e)
            p_c.append(float(score))
    if extra and not unknown_labels_as_fp:
        shown = ", ".join(repr(x) for x in list(extra)[:5]) + (", ..." if len(extra) > 5 else "")
        raise StpnError(
            f"{source}: {len(extra)} predicted label(s) absent from the ground truth ({shown}); "
            "fix the label names, or pass --unknown_labels_as_fp to count them as false positives"
        )
    return EvalData(
        classes=classes,
        video_ids=video_ids,
        gt_video=_i(gt_v),
        gt_label=_i(gt_l),
        gt_start=_f(gt_s),
        gt_end=_f(gt_e),
        amb_video=_i(amb_v),
        amb_start=_f(amb_s),
        amb_end=_f(amb_e),
        pred_video=_i(p_v),
        pred_label=_i(p_l),
        pred_start=_f(p_s),
        pred_end=_f(p_e),
        pred_score=_f(p_c),
        extra_labels=list(extra),
    )


# ----------------------------------------------------------------------------------------------------
# Overlaps.


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


# ----------------------------------------------------------------------------------------------------
# ActivityNet protocol, vectorized.


def _all_point_ap(tp: np.ndarray, npos: int) -> np.ndarray:
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


def _group_slots(keys: np.ndarray):
    """Stable grouping: order, unique keys, group id per sorted item, slot within the group."""
    order = np.argsort(keys, kind="stable")
    uniq, first, counts = np.unique(keys[order], return_index=True, return_counts=True)
    gid = np.repeat(np.arange(len(uniq)), counts)
    slot = np.arange(len(order)) - first[gid]
    return order, uniq, gid, slot, counts


def activitynet_ap(data: EvalData, tiou_thresholds: Sequence[float]) -> np.ndarray:
    """Per-class AP with the ActivityNet protocol (vectorized).

    Returns:
      [C, T] AP for the scored classes.
    """
    thr = _f(tiou_thresholds)
    num_t, num_c = len(thr), data.num_classes
    ap = np.zeros((num_c, num_t))
    scored = np.flatnonzero(data.pred_label < num_c)
    if num_c == 0:
        return ap
    num_v = max(len(data.video_ids), 1)

    # Ground truth grouped by (class, video), file order kept inside a group.
    gt_key = data.gt_label * num_v + data.gt_video
    g_order, g_keys, g_gid, g_slot, g_counts = _group_slots(gt_key)
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
    o, _, _, within, _ = _group_slots(m_group)
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
    for c in range(num_c):
        ap[c] = _all_point_ap(tp[bounds[c] : bounds[c + 1]].T, int(npos[c]))
    return ap


# ----------------------------------------------------------------------------------------------------
# THUMOS14 toolkit protocol, vectorized.


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
    thr = _f(tiou_thresholds)
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
    o, _, _, within, _ = _group_slots(pos_c[gts])
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


# ----------------------------------------------------------------------------------------------------
# Plain loop references (one prediction / ground truth at a time; for tests and the benchmark).


def _tiou_scalar(ps, pe, gs, ge) -> float:
    inter = max(0.0, min(pe, ge) - max(ps, gs))
    union = (ge - gs) + (pe - ps) - inter
    return inter / union if union > 0 else 0.0


def _overlap_scalar(as_, ae, bs, be) -> float:
    inter = min(ae, be) - max(as_, bs)
    return inter / (max(ae, be) - min(as_, bs)) if inter > 0 else 0.0


def activitynet_ap_loop(data: EvalData, tiou_thresholds: Sequence[float]) -> np.ndarray:
    """ActivityNet protocol as a plain loop over predictions; [C, T] AP."""
    thr = [float(t) for t in tiou_thresholds]
    ap = np.zeros((data.num_classes, len(thr)))
    for c in range(data.num_classes):
        gts = [i for i in range(len(data.gt_label)) if data.gt_label[i] == c]
        preds = [i for i in range(len(data.pred_label)) if data.pred_label[i] == c]
        preds = sorted(preds, key=lambda i: -data.pred_score[i])  # stable
        for t, th in enumerate(thr):
            matched = set()
            flags = []
            for p in preds:
                cands = [g for g in gts if data.gt_video[g] == data.pred_video[p]]
                ious = {
                    g: _tiou_scalar(data.pred_start[p], data.pred_end[p], data.gt_start[g], data.gt_end[g])
                    for g in cands
                }
                hit = False
                for g in sorted(cands, key=lambda g: -ious[g]):  # stable: file order on ties
                    if ious[g] < th:
                        break
                    if g in matched:
                        continue
                    matched.add(g)
                    hit = True
                    break
                flags.append(hit)
            ap[c, t] = _all_point_ap_loop(flags, len(gts))
    return ap


def _all_point_ap_loop(flags: list[bool], npos: int) -> float:
    if not flags:
        return 0.0
    tp = fp = 0
    prec, rec = [], []
    for f in flags:
        tp += f
        fp += not f
        prec.append(tp / (tp + fp))
        rec.append(tp / npos)
    prec = [0.0] + prec + [0.0]
    rec = [0.0] + rec + [1.0]
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    return sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1])


def th14kit_ap_loop(data: EvalData, tiou_thresholds: Sequence[float]) -> np.ndarray:
    """THUMOS14 toolkit protocol as a plain loop over videos and ground truth; [C, T] AP.

    Ranks like TH14eventdetpr.m: TP confidences, then FP confidences, stably sorted by confidence.
    """
    thr = [float(t) for t in tiou_thresholds]
    ap = np.zeros((data.num_classes, len(thr)))
    videos = sorted(range(len(data.video_ids)), key=lambda v: data.video_ids[v])
    for c in range(data.num_classes):
        npos = sum(1 for x in data.gt_label if x == c)
        for t, th in enumerate(thr):
            # Like TH14eventdetpr.m: confidences of true positives and of false positives collected
            # separately over the videos (sorted names), concatenated TPs first, then stably sorted.
            tpconf, fpconf = [], []
            for v in videos:
                dets = [i for i in range(len(data.pred_label)) if data.pred_label[i] == c and data.pred_video[i] == v]
                dets = sorted(dets, key=lambda i: -data.pred_score[i])
                gts = [g for g in range(len(data.gt_label)) if data.gt_label[g] == c and data.gt_video[g] == v]
                free = [True] * len(dets)
                for g in gts:
                    best, best_ov = None, None
                    for k, d in enumerate(dets):
                        if not free[k]:
                            continue
                        ov = _overlap_scalar(data.gt_start[g], data.gt_end[g], data.pred_start[d], data.pred_end[d])
                        if best_ov is None or ov > best_ov:
                            best, best_ov = k, ov
                    if best is not None and best_ov > th:
                        free[best] = False
                ambs = [a for a in range(len(data.amb_video)) if data.amb_video[a] == v]
                for k, d in enumerate(dets):
                    if not free[k]:
                        tpconf.append(data.pred_score[d])
                    elif not any(
                        min(data.pred_end[d], data.amb_end[a]) - max(data.pred_start[d], data.amb_start[a]) > 0
                        for a in ambs
                    ):
                        fpconf.append(data.pred_score[d])
            conf = [(x, True) for x in tpconf] + [(x, False) for x in fpconf]
            ranked = sorted(conf, key=lambda x: -x[0])  # stable, like Matlab's sort(conf, 'descend')
            tp = fp = 0
            prec, rec = [], []
            for _, f in ranked:
                tp += f
                fp += not f
                prec.append(tp / (fp + tp))
                rec.append(tp / npos)
            total = 0.0
            for r in TH14_RECALL_POINTS:
                ps = [p for p, q in zip(prec, rec) if q >= r]
                total += (max(ps) if ps else 0.0) / len(TH14_RECALL_POINTS)
            ap[c, t] = total
    return ap


# ----------------------------------------------------------------------------------------------------
# Results, tables, entry points.

_AP_FUNCS = {"activitynet": activitynet_ap, "th14kit": th14kit_ap}
_AVERAGE_RANGES = ((0.1, 0.5), (0.1, 0.7), (0.1, 0.9), (0.5, 0.95))


def default_tiou_thresholds(records: Sequence[VideoRecord], protocol: str) -> np.ndarray:
    """THUMOS-style 0.1..0.9 unless the ground truth has more than 20 classes (then 0.5..0.95).

    For "th14kit" the THUMOS-style values are Matlab's 0.1:0.1:0.9 floats.
    """
    num_classes = len({s.label for r in records for s in r.segments})
    if num_classes > _THUMOS_MAX_CLASSES:
        return ACTIVITYNET_TIOU.copy()
    return matlab_colon(0.1, 0.1, 0.9) if protocol == "th14kit" else THUMOS_TIOU.copy()


def parse_tiou_thresholds(spec: str | Sequence[float] | None) -> list[float] | None:
    """Parses the `--tiou_thresholds` flag.

    Args:
      spec: None or "" (protocol defaults), "thumos" (numpy.linspace(0.1, 0.9, 9)), "activitynet"
        (numpy.linspace(0.5, 0.95, 10)), a comma-separated list "0.1,0.3,0.5", or a list of numbers.

    Returns:
      The thresholds, or None for the defaults.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, str):
        named = {"thumos": THUMOS_TIOU, "activitynet": ACTIVITYNET_TIOU}
        if spec.strip().lower() in named:
            return named[spec.strip().lower()].tolist()
        try:
            values = [float(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise StpnError(
                f"--tiou_thresholds: expected 'thumos', 'activitynet' or numbers like '0.1,0.5', got {spec!r}"
            ) from None
    else:
        values = [float(x) for x in spec]
    return _check_thresholds(values).tolist()


def _range_averages(thr: np.ndarray, m_ap: np.ndarray) -> dict[str, float]:
    out = {}
    for lo, hi in _AVERAGE_RANGES:
        inside = (thr >= lo - 1e-9) & (thr <= hi + 1e-9)
        # Only report a range the thresholds cover end to end.
        if inside.any() and abs(thr[inside].min() - lo) < 1e-9 and abs(thr[inside].max() - hi) < 1e-9:
            out[f"{lo:g}:{hi:g}"] = float(m_ap[inside].mean())
    return out


def _check_thresholds(tiou_thresholds) -> np.ndarray:
    thr = _f(tiou_thresholds).reshape(-1)
    if thr.size == 0 or not np.all(np.isfinite(thr)) or np.any((thr < 0) | (thr > 1)):
        raise StpnError(f"tIoU thresholds must be a non-empty list of numbers in [0, 1], got {list(thr)}")
    return thr


def _results_mapping(predictions: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    if "results" in predictions:
        results = predictions["results"]
        if not isinstance(results, Mapping):
            raise StpnError(f"{source}: 'results' must be an object {{video_id: [detections]}}")
        return results
    return predictions


def evaluate_detections(
    ground_truth: Sequence[VideoRecord],
    predictions: Mapping[str, Any],
    *,
    protocol: str = "activitynet",
    tiou_thresholds: Sequence[float] | None = None,
    unknown_labels_as_fp: bool = False,
    source: str = "predictions",
) -> dict:
    """Evaluates in-memory detections against ground truth records with one protocol.

    Args:
      ground_truth: Records of the evaluated subset (e.g. from `load_ground_truth`).
      predictions: ActivityNet results JSON as a dict ({"results": {video: [{"label", "score",
        "segment": [s, e]}]}}) or just its "results" mapping.
      protocol: "activitynet" or "th14kit".
      tiou_thresholds: Thresholds; None picks `default_tiou_thresholds`.
      unknown_labels_as_fp: Keep predicted labels absent from the ground truth as false positives of
        unscored classes (they cannot change any scored class's AP) instead of raising.
      source: Name used in error messages (e.g. the predictions file).

    Returns:
      {"protocol", "tiou_thresholds": [T], "mAP": [T], "average_mAP", "average_mAP_ranges": {"lo:hi": x},
       "per_class_ap": {class: [T]}, "num_videos", "num_ground_truth", "num_predictions", "warnings": [str]}.
    """
    if protocol not in _AP_FUNCS:
        raise StpnError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS} or 'both'")
    results = _results_mapping(predictions, source)
    gt_ids = {r.video_id for r in ground_truth}
    predicted_ids = [video for video, dets in results.items() if dets]
    if predicted_ids and gt_ids.isdisjoint(predicted_ids):
        raise StpnError(f"{source}: none of its {len(predicted_ids)} video(s) with predictions is in the ground truth "
                        f"({len(gt_ids)} videos): wrong subset or ground-truth file?")
    data = build_eval_data(ground_truth, results, unknown_labels_as_fp=unknown_labels_as_fp, source=source)
    if data.num_classes == 0:
        raise StpnError("ground truth has no action segments to evaluate against")
    if tiou_thresholds is None:
        thr = default_tiou_thresholds(ground_truth, protocol)
    else:
        thr = _check_thresholds(tiou_thresholds)
    warnings = []
    if len(data.pred_label) == 0:
        warnings.append(f"{source}: no predictions; every class scores AP 0")
    num_gt_videos = len(ground_truth)
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
    for w in warnings:
        logging.warning(w)
    ap = _AP_FUNCS[protocol](data, thr)
    m_ap = ap.mean(axis=0)
    return {
        "protocol": protocol,
        "tiou_thresholds": [float(t) for t in thr],
        "mAP": [float(x) for x in m_ap],
        "average_mAP": float(m_ap.mean()),
        "average_mAP_ranges": _range_averages(thr, m_ap),
        "per_class_ap": {c: [float(x) for x in ap[i]] for i, c in enumerate(data.classes)},
        "num_videos": num_gt_videos,
        "num_ground_truth": int(len(data.gt_label)),
        "num_predictions": int(len(data.pred_label)),
        "warnings": warnings,
    }


_PROTOCOL_TITLES = {
    "activitynet": "ActivityNet protocol (match tIoU >= t, all-point AP)",
    "th14kit": "THUMOS14 toolkit protocol (match overlap > t, Ambiguous ignored, 11-point AP)",
}


def format_table(result: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Readable table(s): mAP per threshold, range averages, per-class AP (all in %)."""
    if not isinstance(result, Mapping):
        return "\n\n".join(format_table(r) for r in result)
    thr = result["tiou_thresholds"]
    width = max([len("mAP")] + [len(c) for c in result["per_class_ap"]]) + 2
    head = "tIoU".ljust(width) + "".join(f"{t:>7.2f}" for t in thr)
    lines = [
        _PROTOCOL_TITLES.get(result["protocol"], result["protocol"]),
        f"{result['num_videos']} videos, {len(result['per_class_ap'])} classes, "
        f"{result['num_ground_truth']} ground truth segments, {result['num_predictions']} predictions",
        head,
        "mAP".ljust(width) + "".join(f"{100 * x:>7.2f}" for x in result["mAP"]),
    ]
    avgs = dict(result.get("average_mAP_ranges", {}))
    avgs.setdefault("all thresholds", result["average_mAP"])
    lines.append("average mAP: " + ", ".join(f"{k} = {100 * v:.2f}" for k, v in avgs.items()))
    lines.append("per-class AP:")
    lines.append(head)
    for c, aps in result["per_class_ap"].items():
        lines.append(c.ljust(width) + "".join(f"{100 * x:>7.2f}" for x in aps))
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# File formats.


def load_ground_truth(path: str, subset: str | None = None) -> list[VideoRecord]:
    """Ground truth from a toolkit txt folder or an ActivityNet / BaS-Net JSON file.

    For a folder, `subset` is "test" (default) or "validation" ("val" accepted). For JSON, `subset`
    None keeps every video if the file has a single subset and is an error otherwise.
    """
    if os.path.isdir(path):
        sub = {"val": "validation", None: "test"}.get(subset, subset)
        return annotations.read_thumos14_toolkit(path, sub)
    records = annotations.read_activitynet_json(path, subset)
    if subset is None:
        subsets = sorted({r.subset for r in records})
        if len(subsets) > 1:
            raise StpnError(f"{path}: holds subsets {subsets}; choose one with --subset")
    return records


# Video file suffixes the kit strips from result file names (its copies use .mpeg or .mp4).
_VIDEO_SUFFIX = re.compile(r"\.(mpeg|mp4|avi)$", re.IGNORECASE)


def read_toolkit_results(path: str, ucf101_ids: Mapping[str, int], *, unknown_labels_as_fp: bool = False) -> dict:
    """Toolkit result txt (`video start end class_id confidence` lines) -> {"results": {video: [...]}}.

    Class ids are UCF101 ids (`read_ucf101_ids(det.txt)`). Unknown ids raise StpnError unless
    `unknown_labels_as_fp` (then they become label "UCF101 id <n>"). Like the kit, which strips the
    video file suffix from result names before matching, a trailing `.mpeg`, `.mp4` or `.avi` (any case)
    is removed from the video name ("video_test_0000004.mpeg" -> "video_test_0000004").
    """
    names = {i: n for n, i in ucf101_ids.items()}
    results: dict[str, list] = {}
    for where, fields in annotations.text_rows(path, 5, "video start end class_id confidence"):
        s, e = annotations.parse_interval(fields[1], fields[2], where)
        try:
            cid = int(fields[3])
            conf = float(fields[4])
        except ValueError:
            raise StpnError(
                f"{where}: class id must be an integer and confidence a number, got {' '.join(fields)!r}"
            ) from None
        if not math.isfinite(conf):
            raise StpnError(f"{where}: confidence is {fields[4]} (NaN and infinite scores are not allowed)")
        if cid not in names:
            if not unknown_labels_as_fp:
                raise StpnError(
                    f"{where}: class id {cid} is not in det.txt; "
                    "pass --unknown_labels_as_fp to count it as a false positive"
                )
            label = f"UCF101 id {cid}"
        else:
            label = names[cid]
        video = _VIDEO_SUFFIX.sub("", fields[0])
        results.setdefault(video, []).append({"label": label, "score": conf, "segment": [s, e]})
    return {"version": "VERSION 1.3", "results": results, "external_data": {"used": False, "details": ""}}


def write_toolkit_results(predictions: Mapping[str, Any], path: str, ucf101_ids: Mapping[str, int]) -> int:
    """Writes detections as toolkit result txt, atomically; returns the number of lines.

    Floats are written with repr (shortest exact round trip), so re-reading gives the same numbers.
    """
    results = _results_mapping(predictions, path)
    lines = []
    for vid, dets in results.items():
        for j, det in enumerate(dets):
            label = det["label"]
            if label not in ucf101_ids:
                raise StpnError(f"{path}: video {vid!r}, detection {j}: label {label!r} has no UCF101 id in det.txt")
            s, e = det["segment"]
            lines.append(f"{vid} {float(s)!r} {float(e)!r} {ucf101_ids[label]} {float(det['score'])!r}\n")
    annotations.atomic_write_text(path, "".join(lines))
    return len(lines)


def load_predictions(path: str, *, det_txt: str | None = None, unknown_labels_as_fp: bool = False) -> dict:
    """Predictions from an ActivityNet results JSON or a toolkit result txt (needs det_txt)."""
    text = annotations.read_text(path)
    if text.lstrip().startswith("{") or path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise StpnError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if not isinstance(data, dict) or "results" not in data:
            raise StpnError(f"{path}: missing 'results' object (expected ActivityNet results layout)")
        if not isinstance(data["results"], dict):
            raise StpnError(f"{path}: 'results' must be an object {{video_id: [detections]}}")
        return data
    if det_txt is None:
        raise StpnError(f"{path}: looks like a toolkit result txt; pass --det_txt (UCF101 ids) to read it")
    return read_toolkit_results(path, annotations.read_ucf101_ids(det_txt), unknown_labels_as_fp=unknown_labels_as_fp)


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
      subset: Ground truth subset (toolkit folder: "test" by default or "validation").
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
    protocols = list(PROTOCOLS) if protocol == "both" else [protocol]
    for p in protocols:
        if p not in _AP_FUNCS:
            raise StpnError(f"unknown protocol {protocol!r}; expected 'activitynet', 'th14kit' or 'both'")
    records = load_ground_truth(ground_truth, subset)
    if det_txt is None and os.path.isdir(ground_truth) and os.path.exists(os.path.join(ground_truth, "det.txt")):
        det_txt = os.path.join(ground_truth, "det.txt")
    preds = load_predictions(predictions, det_txt=det_txt, unknown_labels_as_fp=unknown_labels_as_fp)
    results = [
        evaluate_detections(
            records,
            preds,
            protocol=p,
            tiou_thresholds=tiou_thresholds,
            unknown_labels_as_fp=unknown_labels_as_fp,
            source=predictions,
        )
        for p in protocols
    ]
    out.write(format_table(results) + "\n")
    if json_out:
        payload = results if protocol == "both" else results[0]
        annotations.atomic_write_text(json_out, json.dumps(payload, indent=1) + "\n")
    return results

"""Plain-loop statements of both evaluation protocols, one prediction / ground truth at a time.

They are the independent reference the vectorized library code (stpn_tf.evaluation.activitynet,
.th14kit) is tested against (tests/test_evaluate.py) and timed against (bench/evaluate.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stpn_tf.evaluation.matching import EvalData
from stpn_tf.evaluation.th14kit import TH14_RECALL_POINTS


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

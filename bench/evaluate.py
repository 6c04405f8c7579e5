"""Evaluator speed on an ActivityNet-validation-sized random input.

4,926 videos (ActivityNet 1.3 validation), 200 classes, 1-3 ground truth segments per video, 100 detections
per video (60% of them near the video's ground truth, the rest random), 10 thresholds 0.5:0.95.
Prints seconds for the vectorized ActivityNet evaluator (parsing + matching + AP), the THUMOS14-kit
evaluator on the same input, and the plain loop reference on a subset of videos scaled up linearly
(a lower bound: the loop's per-detection ground-truth scan grows with the number of videos).

Run: .venv/bin/python bench/evaluate.py [--videos=4926] [--loop_fraction=0.05]
Last line: RESULT evaluate_seconds=<vectorized ActivityNet seconds>
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stpn_tf.artifacts import annotations as A  # noqa: E402
from stpn_tf.evaluation import activitynet, matching, th14kit, thresholds  # noqa: E402
from tests.helpers import reference_evaluation as loops  # noqa: E402  (the plain-loop reference lives with the tests)


def make_input(num_videos: int, num_classes: int, dets_per_video: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    classes = [f"class_{i:03d}" for i in range(num_classes)]
    records, results = [], {}
    for v in range(num_videos):
        vid = f"v_{v:06d}"
        duration = float(rng.uniform(30, 240))
        label = classes[v % num_classes]  # every class has ground truth
        segs = []
        for _ in range(rng.integers(1, 4)):
            s = float(rng.uniform(0, duration * 0.8))
            segs.append(A.Segment(s, min(duration, s + float(rng.uniform(2, duration * 0.5))), label))
        records.append(A.make_record(vid, "validation", duration, segs))
        near = rng.random(dets_per_video) < 0.6
        which = rng.integers(len(segs), size=dets_per_video)
        jitter = rng.normal(0, 0.15, (dets_per_video, 2))
        rand_s = rng.uniform(0, duration, dets_per_video)
        rand_len = rng.uniform(1, duration / 2, dets_per_video)
        labels = rng.integers(num_classes, size=dets_per_video)
        scores = rng.random(dets_per_video)
        dets = []
        for k in range(dets_per_video):
            if near[k]:
                g = segs[which[k]]
                length = g.end - g.start
                s, e = g.start + jitter[k, 0] * length, g.end + jitter[k, 1] * length
                s, e = max(0.0, s), min(duration, max(e, s))
                lab = label
            else:
                s, e = float(rand_s[k]), float(min(duration, rand_s[k] + rand_len[k]))
                lab = classes[labels[k]]
            dets.append({"label": lab, "score": float(scores[k]), "segment": [float(s), float(e)]})
        results[vid] = dets
    return records, {"version": "VERSION 1.3", "results": results, "external_data": {"used": False, "details": ""}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=4926)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--dets_per_video", type=int, default=100)
    parser.add_argument("--loop_fraction", type=float, default=0.05)
    args = parser.parse_args()
    thr = thresholds.ACTIVITYNET_TIOU

    t0 = time.perf_counter()
    records, preds = make_input(args.videos, args.classes, args.dets_per_video)
    num_gt = sum(len(r.segments) for r in records)
    print(f"input: {args.videos} videos, {args.classes} classes, {num_gt} ground truth segments, "
          f"{args.videos * args.dets_per_video} detections, {len(thr)} thresholds "
          f"(generated in {time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    data = matching.build_eval_data(records, preds["results"])
    t_parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    ap = activitynet.activitynet_ap(data, thr)
    t_anet = time.perf_counter() - t0
    t0 = time.perf_counter()
    kit = th14kit.th14kit_ap(data, thr)
    t_kit = time.perf_counter() - t0
    total = t_parse + t_anet
    print(f"vectorized: parse+validate {t_parse:.2f} s, ActivityNet matching+AP {t_anet:.2f} s "
          f"(total {total:.2f} s, mAP@0.5 {100 * ap[:, 0].mean():.2f}, average mAP {100 * ap.mean():.2f})")
    print(f"vectorized THUMOS14-kit protocol on the same input: {t_kit:.2f} s (average mAP {100 * kit.mean():.2f})")

    n_sub = max(1, int(round(args.videos * args.loop_fraction)))
    sub_records = records[:n_sub]
    sub_preds = {r.video_id: preds["results"][r.video_id] for r in sub_records}
    sub = matching.build_eval_data(sub_records, sub_preds, unknown_labels_as_fp=True)
    t0 = time.perf_counter()
    loop_ap = loops.activitynet_ap_loop(sub, thr)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    vec_ap = activitynet.activitynet_ap(sub, thr)
    t_vec_sub = time.perf_counter() - t0
    scale = args.videos / n_sub
    print(f"loop reference on {n_sub} videos ({len(sub.pred_label)} detections): {t_loop:.2f} s "
          f"(vectorized {t_vec_sub:.3f} s; max |difference| {np.abs(loop_ap - vec_ap).max():.1e}); "
          f"scaled x{scale:.0f} linearly to the full input: ~{t_loop * scale:.0f} s (a lower bound: the loop "
          "scans the class's ground truth per detection, which grows with the video count)")
    print(f"RESULT evaluate_seconds={total:.2f}")


if __name__ == "__main__":
    main()

"""Sweep speed: localization settings scored per second on the THUMOS14 test split, after compiling.

Raw outputs as in bench/localize.py (212 test videos with their real durations, 400-position grid, 20
classes, x24, smooth random outputs with two confident classes per video); the ground truth is the
shipped THUMOS14 test annotations (stpn:thumos14/th14_evalkit_groundtruth), so every setting is scored
against 3,000+ real segments with both a localization and an evaluation (ActivityNet protocol). Bounds are
the shipped defaults (1000 detections, 200 components per stream and class, all classes).

Settings are graph inputs: a structure (here the paper's: one threshold, hard NMS) compiles once, plus
once per class bound the data needs (4, 8, 16 classes passing; stpn_tf.localize.localizer). The warm-up
scores one setting per class threshold, which compiles those; the timed sweep is then 50 settings: class
threshold x T-CAM threshold x alpha. The last lines time a few settings of other structures.

Run: .venv/bin/python bench/sweep.py
"""

from __future__ import annotations

import itertools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from localize import T, make_inputs  # noqa: E402
from stpn_tf.core import resources  # noqa: E402
from stpn_tf.tuning.sweep import PROPOSALS, Sweeper  # noqa: E402
from stpn_tf.artifacts.ground_truth import load_ground_truth  # noqa: E402
from stpn_tf.localize.config import LocalizerConfig  # noqa: E402
from stpn_tf.artifacts.annotations import read_thumos14_durations, read_thumos14_subsets  # noqa: E402


def make_raw():
    folder = resources.resource_path(resources.THUMOS14_REDUCED)
    durations, subsets = read_thumos14_durations(folder), read_thumos14_subsets(folder)
    video_ids = [v for v in sorted(durations) if subsets[v] == "test"]
    rgb, flow, num_snippets, sps, video_durations = make_inputs()
    truth = load_ground_truth(resources.resource_path(resources.THUMOS14_TOOLKIT), "test")
    classes = sorted({s.label for r in truth for s in r.segments})
    raw = {"video_id": np.array(video_ids), "length": np.full(len(video_ids), T, np.int32),
           "num_snippets": num_snippets, "seconds_per_snippet": sps, "duration": video_durations,
           "classes": np.array(classes)}
    for name, stream in (("rgb", rgb), ("flow", flow)):
        for key, value in stream.items():
            raw[f"{name}/{key}"] = value
    return raw, truth


def main() -> None:
    raw, truth = make_raw()
    sweeper = Sweeper(raw, truth, protocols=("activitynet",), batch_size=256)
    class_thresholds = (0.1, 0.15, 0.2, 0.25, 0.3)
    base = LocalizerConfig()
    print(f"videos={len(raw['video_id'])} ground-truth videos={len(truth)} grid={T} classes={len(raw['classes'])} "
          f"interpolation={base.interpolation} bounds: K={base.max_detections} M={base.max_components_per_class}")
    start = time.perf_counter()
    sweeper.score(base)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for ct in class_thresholds:
        sweeper.score(base.replace(class_threshold=ct, alpha=0.55))
    warm = time.perf_counter() - start
    localizer = sweeper.localizer(base)
    print(f"first setting (compile + run): {first:.1f} s; warm-up over {len(class_thresholds)} class thresholds: "
          f"{warm:.1f} s; functions traced: {localizer.tracing_count()}")
    settings = [base.replace(class_threshold=ct, tcam_threshold=tt, alpha=a) for ct, tt, a in
                itertools.product(class_thresholds, (0.02, 0.05, 0.1, 0.15, 0.2), (0.4, 0.6))]
    traced = localizer.tracing_count()
    start = time.perf_counter()
    rows = [sweeper.score(s) for s in settings]
    elapsed = time.perf_counter() - start
    per_ct = {ct: np.mean([r["seconds"] for r, s in zip(rows, settings) if s.class_threshold == ct])
              for ct in class_thresholds}
    print("seconds per setting by class threshold: " + ", ".join(f"{ct:g}: {t:.2f}" for ct, t in per_ct.items()))
    print(f"{len(settings)} settings in {elapsed:.1f} s ({len(settings) / elapsed:.2f} settings/s); new traces during "
          f"the sweep: {localizer.tracing_count() - traced}")
    for name, options in (("multi + oic", dict(**PROPOSALS["multi"], scoring="oic")),
                          ("multi_normalized", PROPOSALS["multi_normalized"]),
                          ("attention + oic", dict(**PROPOSALS["attention"], scoring="oic")),
                          ("paper + soft-NMS", dict(nms="soft"))):
        config = base.replace(**options)
        start = time.perf_counter()
        sweeper.score(config)
        compile_run = time.perf_counter() - start
        start = time.perf_counter()
        for ct in (0.1, 0.12, 0.14):
            sweeper.score(config.replace(class_threshold=ct, alpha=0.45))
        print(f"{name:<18}: first {compile_run:.1f} s, then {(time.perf_counter() - start) / 3:.2f} s per setting")
    print(f"RESULT sweep_settings_per_second={len(settings) / elapsed:.3f}")


if __name__ == "__main__":
    main()

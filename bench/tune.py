"""`stpn tune`'s search on THUMOS14-length raw outputs made without training: time, peak RSS, compiles.

Raw outputs as the models would save them, for the shipped THUMOS14 videos (stpn:thumos14/thumos14reduced
durations; 200 validation videos to tune on, 212 test videos), 20 classes, 25 fps / 16-frame snippets,
scored against the shipped toolkit ground truth (stpn:thumos14/th14_evalkit_groundtruth). The outputs are
drawn from the ground truth so the search has something to find: inside a ground-truth segment the
class's T-CAM and the attention rise (boundaries jittered, a fifth of the segments missed), outside they
are smooth noise with a few false bumps; a video's own classes get probabilities in [0.3, 1), the others
[0, 0.15). Both searches of the shipped space run, as `stpn tune` runs them: on the 400-position grid and on
every snippet (outputs padded to the longest video), with the shipped config's space, rounds, joint keys
and objective (the lower of the two protocols' averages), in one process.

Run: .venv/bin/python bench/tune.py [--grid-only] [--rounds=N]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from stpn_tf.artifacts.annotations import read_thumos14_durations, read_thumos14_subsets  # noqa: E402
from stpn_tf.artifacts.ground_truth import load_ground_truth  # noqa: E402
from stpn_tf.configs import load_config  # noqa: E402
from stpn_tf.core import resources  # noqa: E402
from stpn_tf.localize import timeline  # noqa: E402
from stpn_tf.localize.config import LocalizerConfig  # noqa: E402
from stpn_tf.tuning import sweep  # noqa: E402

GRID, FPS, STRIDE = 400, 25.0, 16


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda row: np.convolve(row, kernel, "same"), -1, x)


def make_raw(subset: str, *, all_snippets: bool, seed: int) -> tuple[dict[str, np.ndarray], list]:
    """Raw outputs [B, T...] of the `subset` videos ("validation" or "test") and their ground truth."""
    folder = resources.resource_path(resources.THUMOS14_REDUCED)
    durations, subsets = read_thumos14_durations(folder), read_thumos14_subsets(folder)
    truth = {r.video_id: r for r in load_ground_truth(resources.resource_path(resources.THUMOS14_TOOLKIT), subset)}
    video_ids = [v for v in sorted(durations) if subsets[v] == subset]
    classes = sorted({s.label for r in truth.values() for s in r.segments})
    c = len(classes)
    sps = timeline.seconds_per_snippet(FPS, STRIDE)
    seconds = np.array([durations[v] for v in video_ids])
    num_snippets = np.maximum(1, np.floor(seconds / sps)).astype(np.int32)
    lengths = num_snippets if all_snippets else np.full(len(video_ids), GRID, np.int32)
    t = int(lengths.max())
    rng = np.random.default_rng(seed)
    raw = {"video_id": np.array(video_ids), "length": lengths.astype(np.int32), "num_snippets": num_snippets,
           "seconds_per_snippet": np.full(len(video_ids), sps, np.float32), "classes": np.array(classes),
           "duration": seconds.astype(np.float32)}
    for stream in ("rgb", "flow"):
        attention = np.zeros((len(video_ids), t), np.float32)
        tcam = np.zeros((len(video_ids), t, c), np.float32)
        probabilities = rng.uniform(0, .15, (len(video_ids), c)).astype(np.float32)
        for i, video in enumerate(video_ids):
            n = int(lengths[i])
            step = seconds[i] / n  # seconds per position
            a = _smooth(rng.uniform(0, .5, n), 9)
            cam = _smooth(rng.normal(-2, 1.5, (c, n)), 9)
            record = truth.get(video)
            for segment in (record.segments if record else ()):
                k = classes.index(segment.label)
                probabilities[i, k] = rng.uniform(.3, 1.)
                if rng.uniform() < .2:
                    continue
                jitter = rng.normal(0, .15 * (segment.end - segment.start) + .3, 2)
                lo = int(np.clip((segment.start + jitter[0]) / step, 0, n - 1))
                hi = int(np.clip((segment.end + jitter[1]) / step, lo + 1, n))
                a[lo:hi] += rng.uniform(.3, .8)
                cam[k, lo:hi] += rng.uniform(3, 6)
            for _ in range(rng.integers(0, 4)):  # false bumps
                k, lo = rng.integers(c), rng.integers(n)
                cam[k, lo:lo + rng.integers(2, 12)] += rng.uniform(2, 5)
            attention[i, :n] = np.clip(a, 0, 1)
            tcam[i, :n] = cam.T
        raw[f"{stream}/attention"], raw[f"{stream}/tcam"] = attention, tcam
        raw[f"{stream}/probabilities"] = probabilities
    return raw, list(truth.values())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid-only", action="store_true", help="skip the every-snippet search")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--show", action="store_true", help="print every search line")
    args = parser.parse_args()
    config = load_config("thumos14")
    space = {k: tuple(config.tune.space[k]) for k in sweep.ordered_keys(list(config.tune.space.keys()))
             if k != "all_snippets"}
    grids = (False,) if args.grid_only else tuple(config.tune.space.all_snippets)
    rounds = args.rounds or int(config.tune.rounds)
    objective = sweep.objective_for(config.evaluate.protocol, config.tune.objective)
    start = time.perf_counter()
    compiles, found = 0, {}
    for all_snippets in grids:
        tick = time.perf_counter()
        raw_tune, truth_tune = make_raw("validation", all_snippets=all_snippets, seed=1)
        raw_test, truth_test = make_raw("test", all_snippets=all_snippets, seed=2)
        made = time.perf_counter() - tick
        out = sys.stdout if args.show else io.StringIO()
        result = sweep.search_raw(raw_tune, truth_tune, raw_test, truth_test, base=LocalizerConfig(), space=space,
                                  rounds=rounds, joint=tuple(config.tune.joint), objective=objective,
                                  batch_size=int(config.tune.batch_size), out=out)
        compiles += result["compiles"]
        found[all_snippets] = result
        print(f"all_snippets={all_snippets}: T={raw_tune['rgb/tcam'].shape[1]}/{raw_test['rgb/tcam'].shape[1]}, "
              f"{len(result['history'])} settings scored in {time.perf_counter() - tick - made:.1f} s (+{made:.1f} s "
              f"making the outputs); XLA compiles {result['compiles']}; peak RSS so far {peak_rss_mb():.0f} MB",
              flush=True)
        for name, key in (("paper default", "test_default"), ("chosen", "test_chosen")):
            r = result[key]["protocols"]
            print(f"  test {name:<14} ActivityNet {100 * r['activitynet']['average_mAP']:6.2f}  toolkit "
                  f"{100 * r['th14kit']['average_mAP']:6.2f}   {result[key]['setting']}")
        del raw_tune, raw_test
    seconds = time.perf_counter() - start
    print(f"objective {objective}; wall {seconds:.1f} s; peak RSS {peak_rss_mb():.0f} MB; XLA compiles {compiles}")
    print(f"RESULT tune_seconds={seconds:.1f}")
    print(f"RESULT tune_peak_rss_mb={peak_rss_mb():.0f}")


if __name__ == "__main__":
    main()

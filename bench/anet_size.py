"""ActivityNet 1.3 size end to end: build-dataset, one training epoch per stream, localization, evaluation.

A generated ActivityNet-shaped set: 19,994 videos (10,024 training, 4,926 validation, 5,044 testing without
annotations, as in the release), 200 classes, durations drawn to ActivityNet's spread (log-normal around 2
minutes, 5 s to 12.5 min), one class per video with 1-3 segments, features resampled to 100 snippets per video
(`--snippet_time=duration`) in one HDF5 file (the `activitynet_h5` layout). The features are D = 128 per
stream by default (`--feature_dim`; 2 x 128 floats x 100 snippets x 19,994 videos = 2.0 GB of HDF5 and about
as much TFRecord), not I3D's 1024, to fit the disk and the time of a 2-core machine; memory per video scales
with D, the flatness checked here does not depend on it.

The localization stage also saves the raw outputs, and a `stpn localize --raw` stage localizes them again
(the same detections, without the models). Every stage runs as its own process (`stpn ...`, as a user runs it) and is timed; its peak RSS comes from
the kernel (wait4's ru_maxrss). The same stages run first on a 2,000-video set with the same proportions;
memory must stay flat: the last line is the largest stage's peak RSS at full size over the same at 2,000
videos. Last, one 2-hour video with every snippet kept (25 fps, 16-frame snippets: 11,250 snippets) is
localized with `--config.localize.all_snippets=True` by the full-size models.

Run: .venv/bin/python bench/anet_size.py [--root=work/anet_size] [--feature_dim=128] [--keep]
Takes about 5.5 minutes on a 2-core machine; needs about 5 GB of free disk under --root (removed after unless --keep).
The evaluation's mAP is near zero: one epoch at the config's learning rate on random features measures scale,
not accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STPN = [sys.executable, "-m", "stpn_tf.cli"]
SUBSETS = (("training", 10024), ("validation", 4926), ("testing", 5044))  # ActivityNet 1.3: 19,994 videos
NUM_CLASSES = 200
SNIPPETS = 100
FPS, STRIDE = 25.0, 16
LONG_SECONDS = 7200.0


def run_stage(name: str, cmd: list[str], log_path: str) -> tuple[float, float]:
    """Runs one stage as a child process; returns (wall seconds, peak RSS in MB) and fails loudly."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2"))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"stage {name} failed (exit {proc.returncode}); {log_path} ends:\n{tail}")
    return seconds, usage.ru_maxrss / 1024.0  # Linux: kilobytes


def generate(out: str, total_videos: int, feature_dim: int, seed: int = 0, long_video: bool = False) -> None:
    """Annotations JSON, class list and HDF5 features of an ActivityNet-shaped set (streams one video at a time)."""
    import h5py

    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    classes = [f"activity_{c:03d}" for c in range(NUM_CLASSES)]
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")
    scale = total_videos / sum(n for _, n in SUBSETS)
    counts = [(subset, max(1, round(n * scale))) for subset, n in SUBSETS]
    database = {}
    # Each class raises its own pair of feature dims inside its segments (so a trained model finds something).
    directions = rng.normal(0, 1, (NUM_CLASSES, 2 * feature_dim)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    path = os.path.join(out, "features.h5")
    with h5py.File(path + ".tmp", "w") as h5:
        index = 0
        for subset, count in counts:
            for _ in range(count):
                vid = f"anet{index:07d}"
                index += 1
                if long_video:
                    duration, snippets = LONG_SECONDS, int(LONG_SECONDS * FPS / STRIDE)
                else:
                    duration, snippets = float(np.clip(rng.lognormal(math.log(100.0), 0.65), 5.0, 750.0)), SNIPPETS
                label = int(rng.integers(NUM_CLASSES))
                segments = []
                for _ in range(int(rng.integers(1, 4))):
                    length = duration * rng.uniform(0.08, 0.5)
                    start = rng.uniform(0, duration - length)
                    segments.append([round(start, 2), round(start + length, 2)])
                features = rng.normal(0, 0.3, (snippets, 2 * feature_dim)).astype(np.float32)
                for start, end in segments:
                    a, b = int(start / duration * snippets), int(math.ceil(end / duration * snippets))
                    features[a:b] += 2.0 * directions[label]
                h5.create_dataset("v_" + vid, data=features)
                entry = {"subset": subset, "duration": round(duration, 2), "url": "", "annotations": []}
                if subset != "testing":
                    entry["annotations"] = [{"segment": s, "label": classes[label]} for s in segments]
                database[vid] = entry
    os.replace(path + ".tmp", path)
    with open(os.path.join(out, "annotations.json"), "w") as f:
        json.dump({"version": "ActivityNet-shaped (generated)", "database": database}, f)


def pipeline(root: str, videos: int, feature_dim: int, rows: list, tag: str) -> str:
    source, dataset, work = (os.path.join(root, tag, name) for name in ("source", "dataset", "work"))
    logs = os.path.join(root, tag, "logs")
    os.makedirs(logs, exist_ok=True)
    train_videos = max(1, round(SUBSETS[0][1] * videos / sum(n for _, n in SUBSETS)))
    epoch = math.ceil(train_videos / 6)  # the config's batch of 6

    def stage(name, cmd):
        seconds, rss = run_stage(f"{tag}/{name}", cmd, os.path.join(logs, f"{name}.log"))
        rows.append((tag, name, seconds, rss))
        print(f"{tag:>6} {name:<14} {seconds:8.1f} s  peak RSS {rss:7.0f} MB", flush=True)

    stage("generate", [sys.executable, os.path.abspath(__file__), "--generate_only", f"--out={source}",
                       f"--videos={videos}", f"--feature_dim={feature_dim}"])
    stage("build-dataset", [*STPN, "build-dataset", "--layout=activitynet_h5",
                            f"--annotations={source}/annotations.json", f"--features={source}/features.h5",
                            f"--classes={source}/classes.txt", "--snippet_time=duration", f"--out={dataset}"])
    common = ["--config=activitynet13", f"--config.dataset.dir={dataset}", f"--workdir={work}",
              f"--config.train.steps={epoch}", f"--config.train.steps_per_epoch={epoch}"]
    for stream in ("rgb", "flow"):
        stage(f"train {stream}", [*STPN, "train", *common, f"--stream={stream}"])
    stage("localize", [*STPN, "localize", f"--workdir={work}", f"--out={work}/detections.json",
                       f"--save_raw={work}/raw.npz"])
    # Again from the saved raw outputs, without the models (issue 20: under 30 s at full size), to the same bytes.
    stage("localize --raw", [*STPN, "localize", f"--raw={work}/raw.npz", f"--out={work}/detections_raw.json",
                             "--config=activitynet13"])
    with open(f"{work}/detections.json", "rb") as a, open(f"{work}/detections_raw.json", "rb") as b:
        print(f"{tag:>6} --raw detections identical to the models': {a.read() == b.read()}", flush=True)
    stage("evaluate", [*STPN, "evaluate", f"--ground_truth={dataset}/ground_truth.json", "--subset=test",
                       f"--predictions={work}/detections.json", "--protocol=activitynet",
                       f"--json_out={work}/evaluation.json", "--unknown_labels_as_fp"])  # small sets miss classes
    with open(os.path.join(work, "evaluation.json")) as f:
        summary = json.load(f)
    print(f"{tag:>6} evaluation: {json.dumps(summary)[:300]}", flush=True)
    return work


def long_video(root: str, work: str, feature_dim: int, rows: list) -> None:
    """One 2-hour video, every snippet kept (11,250), localized by the full-size models."""
    source, dataset = os.path.join(root, "long", "source"), os.path.join(root, "long", "dataset")
    logs = os.path.join(root, "long", "logs")
    os.makedirs(logs, exist_ok=True)
    for name, cmd in (
        ("generate", [sys.executable, os.path.abspath(__file__), "--generate_only", "--long_video", f"--out={source}",
                      "--videos=3", f"--feature_dim={feature_dim}"]),
        ("build-dataset", [*STPN, "build-dataset", "--layout=activitynet_h5", f"--annotations={source}/annotations.json",
                           f"--features={source}/features.h5", f"--classes={source}/classes.txt",
                           f"--out={dataset}", "--num_shards=1"]),
        ("localize 2h", [*STPN, "localize", f"--workdir={work}", f"--config.dataset.dir={dataset}",
                         "--config.localize.all_snippets=True", f"--out={root}/long/detections.json"]),
    ):
        seconds, rss = run_stage(f"long/{name}", cmd, os.path.join(logs, f"{name}.log"))
        rows.append(("2h", name, seconds, rss))
        print(f"{'2h':>6} {name:<14} {seconds:8.1f} s  peak RSS {rss:7.0f} MB", flush=True)
    with open(f"{root}/long/detections.json") as f:
        results = json.load(f)["results"]
    print(f"    2h video: {sum(len(v) for v in results.values())} detections", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(REPO, "work", "anet_size"))
    parser.add_argument("--videos", type=int, default=sum(n for _, n in SUBSETS))
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--feature_dim", type=int, default=128)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--generate_only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long_video", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_only:
        generate(args.out, args.videos, args.feature_dim, long_video=args.long_video)
        return
    if os.path.exists(args.root):
        shutil.rmtree(args.root)
    rows: list = []
    print(f"ActivityNet-shaped set: {args.videos} videos (and a {args.small}-video run), {NUM_CLASSES} classes, "
          f"{SNIPPETS} snippets per video, D={args.feature_dim} per stream; stages as separate processes", flush=True)
    try:
        pipeline(args.root, args.small, args.feature_dim, rows, "small")
        work = pipeline(args.root, args.videos, args.feature_dim, rows, "full")
        long_video(args.root, work, args.feature_dim, rows)
        print("\n| stage | 2,000 videos: s | MB | full size: s | MB | RSS ratio |")
        print("|---|---|---|---|---|---|")
        small = {name: (s, m) for tag, name, s, m in rows if tag == "small"}
        for tag, name, seconds, rss in rows:
            if tag == "full":
                s0, m0 = small[name]
                print(f"| {name} | {s0:.1f} | {m0:.0f} | {seconds:.1f} | {rss:.0f} | {rss / m0:.2f} |")
        for tag, name, seconds, rss in rows:
            if tag == "2h":
                print(f"| 2-hour video: {name} | | | {seconds:.1f} | {rss:.0f} | |")
        peak_small = max(m for tag, _, _, m in rows if tag == "small")
        peak_full = max(m for tag, _, _, m in rows if tag == "full")
        print(f"peak RSS: {peak_small:.0f} MB at {args.small} videos, {peak_full:.0f} MB at {args.videos}")
        print(f"RESULT anet_size_peak_rss_ratio={peak_full / peak_small:.3f}")
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)


if __name__ == "__main__":
    main()

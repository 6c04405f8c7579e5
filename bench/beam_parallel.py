"""Beam pipelines in one process against the DirectRunner's two-process mode: wall time of both pipelines.

  * extraction + TFRecord building (stpn_tf.beam.extract.run_beam_extract): --videos synthetic 160 x 120
    videos of --frames frames at 25 fps, OpenCV TV-L1 with its standard settings, stand-in I3D models;
  * batch localization (stpn_tf.beam.localize.run_beam_localize): --localize_videos random feature files
    (D = 1024, 20 classes, 50..300 snippets, random STPN weights) through an `stpn export` (400-position
    grid, XLA, default localization settings), 8 videos per call.

Each pipeline runs first with the single-process DirectRunner, then with `--direct_num_workers=2
--direct_running_mode=multi_processing`, on fresh output directories; the outputs of both are compared
byte for byte. Wall time includes each runner's start-up (two worker interpreters importing TensorFlow and
loading the models in the two-process mode), which is what a user waits for.

Usage: .venv/bin/python bench/beam_parallel.py [--videos=6] [--frames=96] [--localize_videos=200]
Last line: RESULT beam_two_process_speedup_extract=<x>  (single-process / two-process wall time)
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import numpy as np

TWO_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def write_video(path: str, frames: int, seed: int, width: int = 160, height: int = 120) -> None:
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (7, 7), 0)
    square = cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (3, 3), 0)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (width, height))
    for i in range(frames):
        frame = background.copy()
        left, top = int(10 + (i * 2) % (width - 48)), int(40 + 20 * np.sin(i / 10.0))
        frame[top:top + 32, left:left + 32] = square
        writer.write(frame)
    writer.release()


def same_tree(a: str, b: str) -> bool:
    def files(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)

    return files(a) == files(b) and all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)
                                        for n in files(a))


def timed(function, **kwargs) -> float:
    start = time.perf_counter()
    code = function(**kwargs)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{function.__name__} returned {code}")
    return elapsed


def bench_extract(tmp: str, videos: int, frames: int) -> tuple[float, float, bool]:
    from stpn_tf.beam.extract import run_beam_extract
    from stpn_tf.extract import pipeline, standin

    standin.build_standin_i3d(os.path.join(tmp, "rgb"), channels=3)
    standin.build_standin_i3d(os.path.join(tmp, "flow"), channels=2)
    folder = os.path.join(tmp, "videos")
    os.makedirs(folder)
    for i in range(videos):
        write_video(os.path.join(folder, f"video_{i:03d}.avi"), frames, seed=i)
    common = dict(videos=[folder], split="test", num_shards=2, config=pipeline.ExtractConfig(),
                  models=pipeline.I3DModels(rgb_model=os.path.join(tmp, "rgb"), flow_model=os.path.join(tmp, "flow")))
    times = []
    for name, args in (("one", []), ("two", TWO_PROCESSES)):
        times.append(timed(run_beam_extract, out=os.path.join(tmp, name, "features"),
                           dataset_dir=os.path.join(tmp, name, "dataset"), pipeline_args=args, **common))
    same = same_tree(os.path.join(tmp, "one"), os.path.join(tmp, "two"))
    return times[0], times[1], same


def bench_localize(tmp: str, count: int) -> tuple[float, float, bool]:
    from stpn_tf.beam.localize import run_beam_localize
    from stpn_tf.artifacts.annotations import THUMOS14_CLASSES
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.artifacts import feature_dir
    from stpn_tf.inference.export import run_export
    from tests.helpers.workdir import write_random_workdir

    workdir = write_random_workdir(os.path.join(tmp, "workdir"), list(THUMOS14_CLASSES), 1024)
    export = os.path.join(tmp, "export")
    if run_export(workdir=workdir, out=export, grid=GridConfig()) != 0:
        raise SystemExit("export failed")
    features = os.path.join(tmp, "loc_features")
    rng = np.random.default_rng(0)
    for i in range(count):
        length = int(rng.integers(50, 301))
        feature_dir.write_video(features, "test", feature_dir.VideoFeatures(
            video_id=f"v_{i:04d}", rgb=rng.normal(0, 1, (length, 1024)).astype(np.float32),
            flow=rng.normal(0, 1, (length, 1024)).astype(np.float32), fps=25.0, stride_frames=16,
            num_frames=length * 16, duration=length * 0.64))
    times = []
    for name, args in (("one", []), ("two", TWO_PROCESSES)):
        times.append(timed(run_beam_localize, features=features, split="test", export_dir=export,
                           output=os.path.join(tmp, f"detections_{name}.json"), pipeline_args=args))
    same = filecmp.cmp(os.path.join(tmp, "detections_one.json"), os.path.join(tmp, "detections_two.json"),
                       shallow=False)
    return times[0], times[1], same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=96, help="frames per video (16 per snippet)")
    parser.add_argument("--localize_videos", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        localize = bench_localize(os.path.join(tmp, "localize"), args.localize_videos)
        extract = bench_extract(os.path.join(tmp, "extract"), args.videos, args.frames)
    rows = [(f"extract + TFRecords, {args.videos} videos x {args.frames} frames", *extract),
            (f"localize, {args.localize_videos} videos", *localize)]
    print(f"{'pipeline':<44} {'1 process s':>12} {'2 processes s':>14} {'speedup':>8}  identical")
    for name, one, two, same in rows:
        print(f"{name:<44} {one:>12.1f} {two:>14.1f} {one / two:>7.2f}x  {'yes' if same else 'NO'}")
    print(f"RESULT beam_two_process_speedup_extract={extract[0] / extract[1]:.2f}")


if __name__ == "__main__":
    main()

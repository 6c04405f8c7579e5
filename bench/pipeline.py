"""Input pipeline vs train step, and the dataset builder's memory as the video count grows.

1. Writes a THUMOS14-size training split to TFRecords: the 200 real validation videos' lengths
   (duration / 0.64 s snippets, about 280 on average) with D = 1024 per stream, random features, in
   both storages of stpn_tf.artifacts.shards: "by_stream" (each stream in its own shards, what
   `stpn build-dataset` writes) and "combined" (one record per video with both streams, earlier builds).
2. Pipeline rate: examples/s that `pipeline.make_train_dataset` (400-snippet stratified sampling,
   batch 6, one stream) delivers from those shards, iterated without a model: reading the TFRecords
   every epoch (uncached) from each storage, and in the steady state of `train.cache_features=True`
   (the THUMOS14 config) after the first epoch. The first batches of both storages are checked equal.
3. Train-step rate: examples/s that `model.fit` consumes (STPN, XLA-compiled Adam step, batch 6,
   400 x 1024) from one cached batch, so the input pipeline costs nothing there; same process.
4. Builder memory: `run_build_dataset` on N synthetic videos (N = 500 and 2,000 by default, each in a
   fresh subprocess; features generated one video at a time by an in-memory feature source). Prints
   the peak RSS (ru_maxrss) and the tracemalloc peak of the build call; flat numbers = streaming.

Run: .venv/bin/python bench/pipeline.py [--pipeline_batches=300] [--train_steps=150]
       [--memory_videos=500,2000] [--memory_feature_dim=1024] [--memory_snippets=96]
Last line: RESULT pipeline_uncached_vs_train_step=<uncached pipeline examples/s from by_stream shards (the
build-dataset default) / train-step examples/s>
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from stpn_tf.core import resources  # noqa: E402
from stpn_tf.artifacts import annotations as ann  # noqa: E402
from stpn_tf.artifacts.feature_dir import VideoFeatures  # noqa: E402

REDUCED = resources.resource_path(resources.THUMOS14_REDUCED)


def write_thumos14_size_split(out_dir: str, feature_dim: int, seed: int = 0,
                              storage: str = "by_stream") -> tuple[list[str], int]:
    from stpn_tf.data.records import schema
    from stpn_tf.data.records.writer import ShardedWriter

    durations = ann.read_thumos14_durations(REDUCED)
    subsets = ann.read_thumos14_subsets(REDUCED)
    train = [v for v in durations if subsets[v] == "validation"]
    rng = np.random.default_rng(seed)
    total = 0
    with ShardedWriter(out_dir, "train", 4, storage=storage) as writer:
        for i, vid in enumerate(train):
            length = max(1, int(durations[vid] / 0.64))
            total += length
            rgb = rng.standard_normal((length, feature_dim), dtype=np.float32)
            flow = rng.standard_normal((length, feature_dim), dtype=np.float32)
            make = schema.make_stream_examples if storage == "by_stream" else schema.make_example
            writer.write(make(video_id=vid, subset="train", rgb=rgb, flow=flow, labels=[i % 20],
                              duration=durations[vid], fps=25.0, stride_frames=16))
    return writer.shards, total // len(train)


def _train_dataset(shards, feature_dim, batch_size, cache=False):
    from stpn_tf.data import pipeline

    return pipeline.make_train_dataset(shards, stream="rgb", num_classes=20, feature_dim=feature_dim,
                                       num_snippets=400, batch_size=batch_size, shuffle_buffer=256, seed=0,
                                       cache=cache)


def same_first_batches(shards_a, shards_b, feature_dim, batch_size, batches=3) -> bool:
    """True when both shard sets give the same first training batches (same seed)."""
    a = iter(_train_dataset(shards_a, feature_dim, batch_size))
    b = iter(_train_dataset(shards_b, feature_dim, batch_size))
    for _ in range(batches):
        (xa, ya), (xb, yb) = next(a), next(b)
        if not (np.array_equal(xa["features"].numpy(), xb["features"].numpy())
                and np.array_equal(ya.numpy(), yb.numpy())):
            return False
    return True


def pipeline_rate(shards, feature_dim, batches, batch_size, cache=False):
    ds = _train_dataset(shards, feature_dim, batch_size, cache=cache)
    it = iter(ds)
    # Warm-up: file opening, autotuning, shuffle buffer fill; with the cache, one full epoch (200 videos)
    # so that the timed part is the steady state of every later epoch.
    for _ in range(20 + (-(-200 // batch_size) if cache else 0)):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def train_step_rate(shards, feature_dim, steps, batch_size):
    import keras
    import tensorflow as tf

    from stpn_tf.data import pipeline
    from stpn_tf.model.stpn import STPN

    batch = next(iter(pipeline.make_train_dataset(
        shards, stream="rgb", num_classes=20, feature_dim=feature_dim, num_snippets=400,
        batch_size=batch_size, shuffle_buffer=16, seed=0)))
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    model = STPN(20)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=True)
    model.fit(ds, steps_per_epoch=10, epochs=1, verbose=0, shuffle=False)  # trace + XLA compile
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return steps * batch_size / (time.perf_counter() - start)


class SyntheticSource:
    """A `features.FeatureSource` that makes each video's features on demand (nothing on disk)."""

    def __init__(self, ids, feature_dim, mean_snippets):
        self._ids = set(ids)
        self.feature_dim = feature_dim
        self.mean_snippets = mean_snippets

    def video_ids(self):
        return sorted(self._ids)

    def has(self, video_id):
        return video_id in self._ids

    def read(self, video_id):
        rng = np.random.default_rng(int(video_id.split("_")[-1]))
        length = int(rng.integers(self.mean_snippets // 2, self.mean_snippets * 3 // 2 + 1))
        rgb = rng.standard_normal((length, self.feature_dim), dtype=np.float32)
        flow = rng.standard_normal((length, self.feature_dim), dtype=np.float32)
        return VideoFeatures(video_id=video_id, rgb=rgb, flow=flow, fps=25.0, stride_frames=16,
                             where=f"synthetic:{video_id}")

    def source_files(self, video_ids):
        return []

    def close(self):
        pass


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Current RSS in MB, after resetting the kernel's peak (VmHWM) so the build's own peak shows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    current = _status_mb("VmRSS")
    return current if current is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss() -> float:
    """Peak RSS in MB since the last reset (VmHWM), else the process-lifetime ru_maxrss."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(num_videos: int, feature_dim: int, mean_snippets: int) -> None:
    """Builds `num_videos` synthetic videos and prints one JSON line with the memory figures."""
    from stpn_tf.data.build import run_build_dataset

    with tempfile.TemporaryDirectory(prefix="stpn_bench_") as tmp:
        classes = [f"class_{c:03d}" for c in range(200)]
        database = {}
        for i in range(num_videos):
            vid = f"v_{i:06d}"
            length = 96 * 0.64
            database[vid] = {"subset": "training" if i % 2 == 0 else "validation", "duration": length,
                             "annotations": [{"segment": [1.0, 20.0], "label": classes[i % 200]}]}
        gt = os.path.join(tmp, "gt.json")
        with open(gt, "w") as f:
            json.dump({"version": "VERSION 1.3", "taxonomy": [], "database": database}, f)
        source = SyntheticSource(database, feature_dim, mean_snippets)
        rss_before = _reset_peak_rss()
        tracemalloc.start()
        start = time.perf_counter()
        run_build_dataset(layout="activitynet_h5", annotations=gt, features="synthetic",
                          out=os.path.join(tmp, "ds"), feature_source=source, progress=False,
                          segments_outside="keep")
        seconds = time.perf_counter() - start
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = _peak_rss()
        size = sum(os.path.getsize(os.path.join(tmp, "ds", n)) for n in os.listdir(os.path.join(tmp, "ds")))
    print(json.dumps({"videos": num_videos, "rss_before_mb": rss_before, "rss_peak_mb": rss_after,
                      "traced_peak_mb": traced_peak / 2**20, "seconds": seconds, "output_mb": size / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline_batches", type=int, default=300)
    parser.add_argument("--train_steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=6)
    parser.add_argument("--feature_dim", type=int, default=1024)
    parser.add_argument("--memory_videos", default="500,2000")
    parser.add_argument("--memory_feature_dim", type=int, default=1024)
    parser.add_argument("--memory_snippets", type=int, default=96)
    parser.add_argument("--_memory_child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        memory_child(args._memory_child, args.memory_feature_dim, args.memory_snippets)
        return

    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory(prefix="stpn_bench_") as tmp:
        shards = {}
        for storage in ("by_stream", "combined"):
            start = time.perf_counter()
            shards[storage], mean_len = write_thumos14_size_split(os.path.join(tmp, storage), args.feature_dim,
                                                                  storage=storage)
            size = sum(os.path.getsize(p) for p in shards[storage]) / 2**20
            print(f"wrote 200 THUMOS14-size training videos, {storage} storage (mean {mean_len} snippets, "
                  f"D={args.feature_dim} per stream, {size:.0f} MB in {len(shards[storage])} files) in "
                  f"{time.perf_counter() - start:.1f} s")
        same = same_first_batches(shards["by_stream"], shards["combined"], args.feature_dim, args.batch_size)
        print(f"first 3 training batches identical between the storages: {same}")
        uncached = pipeline_rate(shards["by_stream"], args.feature_dim, args.pipeline_batches, args.batch_size)
        print(f"input pipeline, uncached (train.cache_features=False), by_stream shards (build-dataset's default): "
              f"{uncached:.0f} examples/s ({args.pipeline_batches} batches of {args.batch_size}, 400 sampled "
              "snippets, one stream)")
        combined = pipeline_rate(shards["combined"], args.feature_dim, args.pipeline_batches, args.batch_size)
        print(f"input pipeline, uncached, combined shards (earlier builds, both streams per record): "
              f"{combined:.0f} examples/s")
        pipe = pipeline_rate(shards["by_stream"], args.feature_dim, args.pipeline_batches, args.batch_size,
                             cache=True)
        print(f"input pipeline, after the first epoch with train.cache_features=True (the thumos14 config): "
              f"{pipe:.0f} examples/s")
        step = train_step_rate(shards["by_stream"], args.feature_dim, args.train_steps, args.batch_size)
        print(f"train step (XLA, cached batch): {step:.0f} examples/s ({args.train_steps} steps)")

    for n in [int(v) for v in args.memory_videos.split(",")]:
        cmd = [sys.executable, os.path.abspath(__file__), f"--_memory_child={n}",
               f"--memory_feature_dim={args.memory_feature_dim}", f"--memory_snippets={args.memory_snippets}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"build {r['videos']:5d} synthetic videos (D={args.memory_feature_dim}, ~{args.memory_snippets} "
              f"snippets, {r['output_mb']:.0f} MB of TFRecords) in {r['seconds']:.1f} s: peak RSS "
              f"{r['rss_peak_mb']:.0f} MB (RSS before the build {r['rss_before_mb']:.0f} MB), "
              f"tracemalloc peak during build {r['traced_peak_mb']:.1f} MB")
    print(f"pipeline vs train step: uncached by_stream {uncached / step:.2f}, uncached combined "
          f"{combined / step:.2f}, cached {pipe / step:.2f}")
    print(f"RESULT pipeline_uncached_vs_train_step={uncached / step:.2f}")


if __name__ == "__main__":
    main()

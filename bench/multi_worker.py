"""Multi-worker training against one process: wall time of `stpn train` on the same data and global batch.

The synthetic THUMOS14-shaped set (200 training videos at their real lengths, D = 256 per stream), the `demo`
config's model, 400-snippet sampling, global batch 6, 600 steps in 3 epochs. Three runs, each a fresh process:
one process with XLA (the default), one process without XLA (what a CPU worker under multi_worker runs), and
two workers on 127.0.0.1 under `--config.train.strategy=multi_worker`. On one 2-core machine the two workers
share the cores and add a gradient all-reduce per step, so this measures the overhead of the strategy, not a
speed-up: on a cluster each worker has its own machine. Also prints the largest weight difference between the
two-worker and the one-process runs (same global batch and data order).

Run: .venv/bin/python bench/multi_worker.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from stpn_tf.data import synthetic  # noqa: E402
from stpn_tf.artifacts.workdir import WorkDir  # noqa: E402

STEPS, STEPS_PER_EPOCH = 600, 200


def command(dataset_dir, workdir, *extra):
    return [sys.executable, "-m", "stpn_tf.cli", "train", "--config=demo", f"--config.dataset.dir={dataset_dir}",
            f"--workdir={workdir}", "--stream=rgb", f"--config.train.steps={STEPS}",
            f"--config.train.steps_per_epoch={STEPS_PER_EPOCH}", *extra]


def ms_per_step(log: str) -> float:
    """The last epoch's ms/step from the per-epoch lines (the first epoch includes compilation)."""
    return float(re.findall(r"- ([0-9.]+) ms/step", log)[-1])


def run_single(dataset_dir, workdir, *extra):
    start = time.perf_counter()
    proc = subprocess.run(command(dataset_dir, workdir, *extra), capture_output=True, text=True,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return seconds, ms_per_step(proc.stdout)


def run_two_workers(dataset_dir, workdir):
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    start = time.perf_counter()
    procs = [subprocess.Popen(command(dataset_dir, workdir, "--config.train.strategy=multi_worker"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CONFIG=json.dumps(
                                  {"cluster": cluster, "task": {"type": "worker", "index": i}})))
             for i in range(2)]
    outputs = [p.communicate()[0] for p in procs]
    seconds = time.perf_counter() - start
    for p, out in zip(procs, outputs):
        if p.returncode:
            raise SystemExit(out[-3000:])
    return seconds, ms_per_step(outputs[0])


def main() -> None:
    root = tempfile.mkdtemp(prefix="stpn_multi_worker_")
    try:
        dataset_dir = os.path.join(root, "data")
        synthetic.write_dataset(dataset_dir, feature_dim=256)
        print(f"synthetic THUMOS14-shaped training split, D=256, {STEPS} steps of global batch 6 (demo config)")
        rows = [("one process, XLA", *run_single(dataset_dir, os.path.join(root, "xla"))),
                ("one process, no XLA", *run_single(dataset_dir, os.path.join(root, "graph"),
                                                    "--config.train.jit_compile=False")),
                ("two workers (multi_worker)", *run_two_workers(dataset_dir, os.path.join(root, "multi")))]
        for name, seconds, ms in rows:
            print(f"{name:<28} wall {seconds:6.1f} s (process start, compile, {STEPS} steps, save); "
                  f"last epoch {ms:.1f} ms/step")
        single = WorkDir(os.path.join(root, "graph")).load_stream_model("rgb").get_weights()
        multi = WorkDir(os.path.join(root, "multi")).load_stream_model("rgb").get_weights()
        print(f"largest |weight difference| two workers vs one process: "
              f"{max(float(np.abs(a - b).max()) for a, b in zip(single, multi)):.2e}")
        print(f"RESULT multi_worker_wall_vs_one_process={rows[2][1] / rows[0][1]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Multi-worker training: two `stpn train --config.train.strategy=multi_worker` processes on 127.0.0.1.

The workers (a TF_CONFIG each, free local ports) train the tiny model of tests/test_train.py with a global batch
of 6; the result must equal one process with the same global batch and data order (weights within 1e-5), and a
run whose two workers are killed mid-run and restarted must end with the same weights as the uninterrupted one.
Every process is bounded in time and stopped by the test.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from stpn_tf.training import trainer as train
from stpn_tf.training.strategy import cluster_task
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.model.stpn import load_stream_model
from tests.helpers.tiny_dataset import GRID, UNITS, read_backup_epoch, write_tiny_dataset

STEPS_PER_EPOCH = 25
# Enough epochs that the kill (at a backup of epoch 2 or more) lands mid-run, few enough to stay fast.
EPOCHS = 6
TIMEOUT = 240


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _command(dataset_dir, workdir, strategy):
    return [sys.executable, "-m", "stpn_tf.cli", "train", "--config=demo", f"--config.dataset.dir={dataset_dir}",
            f"--workdir={workdir}", "--stream=rgb", f"--config.train.strategy={strategy}",
            f"--config.train.steps={EPOCHS * STEPS_PER_EPOCH}", f"--config.train.steps_per_epoch={STEPS_PER_EPOCH}",
            f"--config.train.num_snippets={GRID}", f"--config.model.attention_units={UNITS}",
            "--config.train.shuffle_buffer=16", "--config.train.learning_rate=1e-2"]


def _start_workers(repo_dir, dataset_dir, workdir, logs, tag):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        out = open(logs / f"{tag}-worker{index}.log", "w")
        procs.append(subprocess.Popen(_command(dataset_dir, workdir, "multi_worker"), cwd=repo_dir, env=env,
                                      stdout=out, stderr=subprocess.STDOUT))
    return procs


def _stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait(procs, logs, tag):
    deadline = time.monotonic() + TIMEOUT
    try:
        for index, proc in enumerate(procs):
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, (logs / f"{tag}-worker{index}.log").read_text()[-3000:]
    finally:
        _stop(procs)


def _weights(workdir):
    return load_stream_model(WorkDir(str(workdir)), "rgb").get_weights()


@pytest.fixture(scope="module")
def runs(repo_dir, tmp_path_factory):
    """The single-process reference and an uninterrupted two-worker run."""
    root = tmp_path_factory.mktemp("multi_worker")
    dataset_dir = str(root / "data")
    write_tiny_dataset(dataset_dir)
    single = subprocess.run(_command(dataset_dir, root / "single", "default"), cwd=repo_dir, capture_output=True,
                            text=True, timeout=TIMEOUT, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert single.returncode == 0, single.stderr[-3000:]
    _wait(_start_workers(repo_dir, dataset_dir, root / "multi", root, "multi"), root, "multi")
    return root, dataset_dir


def test_two_workers_equal_one_process(runs):
    root, _ = runs
    single, multi = _weights(root / "single"), _weights(root / "multi")
    assert len(single) == len(multi) == 6  # attention: 2 dense layers; classifier: kernel, bias
    for a, b in zip(single, multi):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    # Training moved the weights: the comparison is not between two untrained models.
    assert max(np.abs(w).max() for w in single) > 0
    log = (root / "multi-worker0.log").read_text()
    assert f"Epoch {EPOCHS}/{EPOCHS} - {STEPS_PER_EPOCH} steps" in log
    assert "2 replicas" in log
    # The chief alone wrote the work directory: the other worker's log says so, and nothing else is there.
    assert "the chief saves the model" in (root / "multi-worker1.log").read_text()
    assert sorted(os.listdir(root / "multi" / "rgb")) == sorted(os.listdir(root / "single" / "rgb"))


def test_killed_workers_resume_to_the_uninterrupted_weights(runs, repo_dir):
    root, dataset_dir = runs
    workdir = root / "killed"
    backup = workdir / "rgb" / "backup"
    procs = _start_workers(repo_dir, dataset_dir, workdir, root, "killed")
    try:
        deadline = time.monotonic() + TIMEOUT
        while (read_backup_epoch(backup) or 0) < 2:
            assert all(p.poll() is None for p in procs), (root / "killed-worker0.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no backup within the time limit"
            time.sleep(0.01)
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
    finally:
        _stop(procs)
    saved = read_backup_epoch(backup)
    assert saved is not None and 2 <= saved < EPOCHS, saved
    assert not (workdir / "rgb" / "model.keras").exists()

    _wait(_start_workers(repo_dir, dataset_dir, workdir, root, "resumed"), root, "resumed")
    resumed_log = (root / "resumed-worker0.log").read_text()
    assert f"Epoch {saved + 1}/{EPOCHS}" in resumed_log and f"Epoch {saved}/{EPOCHS}" not in resumed_log
    for a, b in zip(_weights(root / "multi"), _weights(workdir)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_tf_config_is_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StpnError, match="needs TF_CONFIG"):
        cluster_task()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StpnError, match="TF_CONFIG is not a cluster"):
        cluster_task()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}))
    with pytest.raises(StpnError, match="task worker:3 is not in the cluster"):
        cluster_task()
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert cluster_task() == ("worker", 0, False)  # a chief task exists: worker 0 is not it
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    assert cluster_task() == ("chief", 0, True)
    assert train.TrainConfig(strategy="multi_worker").strategy == "multi_worker"

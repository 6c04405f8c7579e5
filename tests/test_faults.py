"""Faults at run time: writes that fail half-way, damaged model files, two runs at once, and a SavedModel
fed inputs that do not fit.

Full disks are simulated with a file-size limit (RLIMIT_FSIZE, set with util-linux's `prlimit`) on the
command's own process: a write past it fails with EFBIG ("File too large"), as a full disk fails with ENOSPC.
Those runs, and the two concurrent trainings, are processes of their own; the runs that only set the scene run
in this process.
"""

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.training import trainer as train
from stpn_tf.core.errors import StpnError
from stpn_tf.extract import standin
from stpn_tf.core.atomic import is_temporary
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.model.stpn import ModelConfig, load_stream_model
from stpn_tf.inference.runner import load_export
from tests.helpers import cli as runner
from tests.helpers.cli import REPO, cli, stpn_command
from tests.helpers.cli import one_error_line_among_logs as assert_one_line
from tests.helpers.releases import write_basnet_release
from tests.helpers.video import textured_square_frames, write_video
from tests.helpers.workdir import SMALL_D, SMALL_GRID_LENGTH

D = SMALL_D


def stpn(*args, file_limit=None, timeout=300):
    """`stpn args` in its own process, optionally under a file-size limit of `file_limit` bytes."""
    return runner.stpn(*args, expect=None, file_limit=file_limit, env={"PYTHONDONTWRITEBYTECODE": "1"},
                       timeout=timeout)


def snapshot(folder) -> dict[str, bytes]:
    """Every file below `folder` with its bytes."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = handle.read()
    return out


def temporaries(folder) -> list[str]:
    return [os.path.join(root, n) for root, dirs, files in os.walk(folder) for n in files + dirs if is_temporary(n)]


# ---------------------------------------------------------------------------------------- failed writes

def test_build_dataset_on_a_full_disk_keeps_the_previous_dataset(tmp_path):
    files = write_basnet_release(str(tmp_path / "release"), num_train=4, num_test=3, feature_dim=8)
    out = tmp_path / "dataset"
    args = ["build-dataset", "--layout=thumos14_npy", f"--out={out}", *[f"--{k}={v}" for k, v in files.items()]]
    cli(*args)
    before = snapshot(out)
    proc = stpn(*args, "--num_shards=3", file_limit=2048)
    assert_one_line(proc, "cannot write it (File too large", "shards already in the directory are unchanged")
    assert snapshot(out) == before  # the previous complete dataset, byte for byte, and no temporaries


def test_extraction_on_a_full_disk_stops_with_one_line_and_no_half_files(tmp_path):
    for name, channels in (("rgb", 3), ("flow", 2)):
        standin.build_standin_i3d(str(tmp_path / name), channels=channels)
    video = str(tmp_path / "clip.avi")
    write_video(video, textured_square_frames(40), fps=25)  # 2 snippets: 8 KB of features per stream
    out = tmp_path / "features"
    fast = ["--config.extract.tvl1_scales=1", "--config.extract.tvl1_warps=1",
            "--config.extract.tvl1_inner_iterations=2", "--config.extract.tvl1_outer_iterations=1"]
    proc = stpn("extract", video, f"--out={out}", f"--config.extract.rgb_model={tmp_path / 'rgb'}",
                f"--config.extract.flow_model={tmp_path / 'flow'}", *fast, file_limit=4096)
    assert_one_line(proc, "rgb/clip.npy: cannot write it", "the disk is full or a file-size limit is set")
    assert temporaries(tmp_path) == [] and not os.path.exists(out / "test" / "meta" / "clip.json")
    assert not os.path.exists(out / "test" / "rgb" / "clip.npy")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    files = write_basnet_release(str(root / "release"), num_train=6, num_test=3, feature_dim=8)
    cli("build-dataset", "--layout=thumos14_npy", f"--out={root / 'dataset'}",
             *[f"--{k}={v}" for k, v in files.items()])
    return str(root / "dataset")


TRAIN_FLAGS = ["--config=demo", "--config.train.steps=8", "--config.train.steps_per_epoch=4",
               "--config.model.attention_units=4", "--config.train.num_snippets=8"]


def test_training_on_a_full_disk_leaves_only_complete_files_and_resumes(dataset, tmp_path):
    workdir = tmp_path / "work"
    args = ["train", f"--workdir={workdir}", "--stream=rgb", f"--config.dataset.dir={dataset}", *TRAIN_FLAGS]
    proc = stpn(*args, file_limit=12 * 1024)  # the records fit, the first weights backup does not
    assert_one_line(proc, "cannot write it (File too large", "rerun the same command")
    assert not (workdir / "rgb" / "model.keras").exists() and temporaries(workdir) == []
    checkpoints = workdir / "rgb" / "checkpoints"
    names = os.listdir(checkpoints) if checkpoints.exists() else []
    assert all(train.EpochCheckpoints.PATTERN.match(n) for n in names), names  # finished files only
    # With space again the same command finishes the run.
    cli(*args)
    assert load_stream_model(WorkDir(str(workdir)), "rgb").num_classes == 20


def test_export_on_a_full_disk_writes_no_export_and_keeps_an_old_one(small_workdir, small_export, tmp_path):
    out = tmp_path / "export"
    settings = ["--config.localize.num_snippets=8", "--config.localize.max_detections=8",
                "--config.localize.max_components_per_class=4"]
    proc = stpn("export", f"--workdir={small_workdir}", f"--out={out}", *settings, file_limit=64 * 1024)
    assert_one_line(proc, "export: cannot write it (File too large")
    assert os.listdir(tmp_path) == []  # no export and no temporary directory
    shutil.copytree(small_export, out)  # an earlier export of the same work directory
    before = snapshot(out)
    proc = stpn("export", f"--workdir={small_workdir}", f"--out={out}", "--overwrite", *settings, file_limit=64 * 1024)
    assert_one_line(proc, "cannot write it (File too large")
    assert snapshot(out) == before and os.listdir(tmp_path) == ["export"]


# ---------------------------------------------------------------------------------------- damaged files

def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def test_truncated_model_and_saved_model_give_one_line_errors(small_workdir, small_export, tmp_path):
    damaged = tmp_path / "work"
    shutil.copytree(small_workdir, damaged)
    _truncate(damaged / "rgb" / "model.keras")
    with pytest.raises(StpnError, match="rgb/model.keras: cannot load the trained model .* damaged"):
        load_stream_model(WorkDir(str(damaged)), "rgb")
    for victim in ("saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001"):
        copy = tmp_path / victim.replace("/", "_")
        shutil.copytree(small_export, copy)
        _truncate(copy / victim)
        with pytest.raises(StpnError, match=f"{copy}: cannot load the SavedModel"):
            load_export(str(copy))


def test_damaged_training_backup_gives_one_line_error(synthetic_dataset, tmp_path, monkeypatch):
    kwargs = dict(dataset_dir=synthetic_dataset, workdir=str(tmp_path / "work"), stream="rgb", verbose=0,
                  model=ModelConfig(attention_units=4),
                  train=train.TrainConfig(num_snippets=8, batch_size=3, steps=8, steps_per_epoch=4))

    class Crash(train.keras.callbacks.Callback):
        def __init__(self, *args, **kw):
            super().__init__()

        def on_epoch_end(self, epoch, logs=None):  # after BackupAndRestore saved epoch 1
            raise RuntimeError("simulated kill")

    with monkeypatch.context() as m:
        m.setattr(train, "EpochCheckpoints", Crash)
        with pytest.raises(RuntimeError, match="simulated kill"):
            train.run_train(**kwargs)
    backup = tmp_path / "work" / "rgb" / "backup"
    _truncate(backup / "latest.weights.h5")
    with pytest.raises(StpnError, match=f"{backup}: the backup of the interrupted run is damaged"):
        train.run_train(**kwargs)
    from stpn_tf.training import keras_compat

    keras_compat.set_op_determinism(False)


# ---------------------------------------------------------------------------------------- two runs at once

def test_a_second_train_run_on_the_same_stream_is_refused_until_the_first_ends(dataset, tmp_path):
    workdir = tmp_path / "work"
    common = ["train", f"--workdir={workdir}", "--stream=rgb", f"--config.dataset.dir={dataset}", "--config=demo",
              "--config.model.attention_units=4", "--config.train.num_snippets=8"]
    long_run = ["--config.train.steps=100000", "--config.train.steps_per_epoch=50"]
    first = subprocess.Popen(stpn_command(*common, *long_run), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = workdir / "rgb" / ".lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().startswith("process")):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.1)
        second = cli(*common, *long_run, expect=2)  # in this process: the lock is held by another one
        assert_one_line(second, "the rgb stream is being trained by process", "wait for it to finish")
        assert first.poll() is None  # the refusal did not disturb the first run
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # The kernel released the killed run's lock: the next run takes it.
    with WorkDir(str(workdir)).lock("rgb"):
        pass


# ---------------------------------------------------------------------------------------- serving inputs

@pytest.fixture(scope="module")
def serving(small_export):
    return tf.saved_model.load(small_export).signatures["serving_default"]


def _inputs(**changes):
    rng = np.random.default_rng(0)
    inputs = dict(rgb=rng.normal(size=(2, 9, D)).astype(np.float32), flow=rng.normal(size=(2, 9, D)).astype(np.float32),
                  num_snippets=np.array([9, 4], np.int32), seconds_per_snippet=np.array([.64, .64], np.float32))
    inputs.update(changes)
    return {k: tf.constant(v) for k, v in inputs.items()}


def _nan_at(shape, value):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    x[1, 2, 3] = value
    return x


@pytest.mark.parametrize("changes,message", [
    (dict(rgb=np.zeros((2, 9, D + 1), np.float32)), "serving_default: rgb must have 6 features per snippet"),
    (dict(flow=np.zeros((2, 9, 4), np.float32)), "serving_default: flow must have 6 features per snippet"),
    (dict(rgb=np.zeros((2, 9, 4), np.float32), flow=np.zeros((2, 9, 4), np.float32)),
     "serving_default: rgb must have 6 features"),  # several faults: the first check's message
    (dict(rgb=_nan_at((2, 9, D), np.nan)), "serving_default: rgb holds NaN or infinite values"),
    (dict(flow=_nan_at((2, 9, D), np.inf)), "serving_default: flow holds NaN or infinite values"),
    (dict(flow=np.zeros((2, 7, D), np.float32)), "serving_default: rgb and flow must have the same shape"),
    (dict(num_snippets=np.array([9, 10], np.int32)), "serving_default: num_snippets must not exceed the time axis"),
    (dict(num_snippets=np.array([0, 4], np.int32)), "serving_default: num_snippets must be >= 1"),
    (dict(num_snippets=np.array([9], np.int32)), "serving_default: num_snippets must have one entry per video"),
    (dict(seconds_per_snippet=np.array([.64, 0.], np.float32)), "seconds_per_snippet must be positive"),
    (dict(seconds_per_snippet=np.array([-1., .64], np.float32)), "seconds_per_snippet must be positive"),
    (dict(seconds_per_snippet=np.array([np.nan, .64], np.float32)), "seconds_per_snippet must be positive"),
])
def test_serving_default_refuses_inputs_that_do_not_fit(serving, changes, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serving(**_inputs(**changes))


def test_serving_default_answers_inputs_that_fit(serving):
    out = serving(**_inputs())
    assert out["num_detections"].shape == (2,) and out["attention"].shape == (2, 2, SMALL_GRID_LENGTH)

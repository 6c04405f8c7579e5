"""Training one stream: outputs, repeatability, resume after SIGKILL, the `stpn train` CLI, strategies.

Everything runs on a hand-made dataset of 12 tiny videos (D = 8, 5..29 snippets, 3 classes) with a model of
8 attention units on a 16-snippet grid, so one training is a few seconds (mostly XLA compilation).
"""

import dataclasses
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.training import keras_compat, trainer as train
from stpn_tf.training.strategy import make_strategy
from stpn_tf.artifacts.shards import list_shards
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.model.stpn import STPN, ModelConfig, load_stream_model
from tests.helpers.cli import cli
from tests.helpers.tiny_dataset import CLASSES, DIM, GRID, UNITS, read_backup_epoch, write_tiny_dataset

# Two epochs of 10 steps: the checkpoints directory must hold epoch-0001 and epoch-0002.
MODEL = ModelConfig(attention_units=UNITS)
TRAIN = train.TrainConfig(num_snippets=GRID, batch_size=6, steps=20, steps_per_epoch=10, shuffle_buffer=16)
SMALL = dict(model=MODEL, train=TRAIN, verbose=0)


def load_trained(workdir, stream):
    return load_stream_model(WorkDir(workdir), stream)


@pytest.fixture(autouse=True)
def _restore_op_determinism():
    # run_train switches TF op determinism on for the whole process; later tests (in this file or others)
    # must not inherit it, because Keras then silently refuses jit_compile=True.
    yield
    keras_compat.set_op_determinism(False)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny_dataset"))
    write_tiny_dataset(path)
    return path


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    """Work directories of three trainings: seed 0 twice, seed 1 once."""
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        workdir = str(tmp_path_factory.mktemp(f"run_{name}"))
        logs = train.run_train(dataset_dir=dataset_dir, workdir=workdir, stream="rgb",
                               model=MODEL, train=dataclasses.replace(TRAIN, seed=seed), verbose=0)
        runs[name] = (workdir, logs)
    keras_compat.set_op_determinism(False)
    return runs


def _optimizer_steps(workdir):
    """Adam's step counter saved in `<workdir>/rgb/model.keras` (load_stream_model skips the optimizer)."""
    model = keras.models.load_model(os.path.join(workdir, "rgb", "model.keras"), compile=True)
    return int(model.optimizer.iterations.numpy())


def _batch(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    return {"features": rng.normal(size=(batch, GRID, DIM)).astype(np.float32),
            "mask": np.ones((batch, GRID), np.float32)}


def test_run_train_writes_model_logs_checkpoints(trained):
    workdir, logs = trained["a"]
    assert set(logs) == {"loss", "classification_loss", "sparsity_loss"}
    assert all(np.isfinite(v) for v in logs.values())
    # total = classification + beta * sparsity with the default beta 1e-4 (means over the last epoch).
    np.testing.assert_allclose(logs["loss"], logs["classification_loss"] + 1e-4 * logs["sparsity_loss"], rtol=1e-5)
    with open(os.path.join(workdir, "classes.json")) as f:
        assert json.load(f) == CLASSES
    stream_dir = os.path.join(workdir, "rgb")
    assert os.path.isfile(os.path.join(stream_dir, "model.keras"))
    assert glob.glob(os.path.join(stream_dir, "logs", "**", "events.out.tfevents.*"), recursive=True)
    assert sorted(os.listdir(os.path.join(stream_dir, "checkpoints"))) == [
        "epoch-0001.weights.h5", "epoch-0002.weights.h5"]
    # A finished run deletes its backup (it is only for resuming) and leaves no temporary model file.
    assert not os.path.exists(os.path.join(stream_dir, "backup"))
    assert sorted(os.listdir(stream_dir)) == [".lock", "checkpoints", "logs", "model.keras"]

    model = load_trained(workdir, "rgb")
    assert isinstance(model, STPN) and model.attention_units == UNITS and model.num_classes == 3
    assert _optimizer_steps(workdir) == 20  # 2 epochs x 10 steps
    inputs = _batch()
    out = model(inputs)
    assert out["attention"].shape == (2, GRID) and out["tcam"].shape == (2, GRID, 3)
    assert out["video_logits"].shape == (2, 3)
    # The saved model is the last epoch's checkpoint (an independent path to the same weights).
    reference = STPN(3, attention_units=UNITS)
    reference(inputs)
    reference.load_weights(os.path.join(stream_dir, "checkpoints", "epoch-0002.weights.h5"))
    np.testing.assert_allclose(out["video_logits"].numpy(), reference(inputs)["video_logits"].numpy(), rtol=1e-6)


def test_second_call_does_not_retrain(trained, dataset_dir):
    workdir, _ = trained["a"]
    path = os.path.join(workdir, "rgb", "model.keras")
    before = (os.stat(path).st_mtime_ns, open(path, "rb").read())
    events_before = glob.glob(os.path.join(workdir, "rgb", "logs", "**", "events.*"), recursive=True)
    assert train.run_train(dataset_dir=dataset_dir, workdir=workdir, stream="rgb", **SMALL) == {}
    assert (os.stat(path).st_mtime_ns, open(path, "rb").read()) == before
    assert glob.glob(os.path.join(workdir, "rgb", "logs", "**", "events.*"), recursive=True) == events_before


def test_same_seed_same_weights_other_seed_differs(trained):
    weights = {k: load_trained(w, "rgb").get_weights() for k, (w, _) in trained.items()}
    assert len(weights["a"]) == 6  # attention hidden kernel/bias, score kernel/bias, classifier kernel/bias
    for x, y in zip(weights["a"], weights["b"]):
        np.testing.assert_array_equal(x, y)
    assert trained["a"][1] == trained["b"][1]
    assert any(not np.array_equal(x, y) for x, y in zip(weights["a"], weights["c"]))


def test_bad_arguments(dataset_dir, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(StpnError, match="unknown stream"):
        train.run_train(dataset_dir=dataset_dir, workdir=str(work), stream="depth")
    with pytest.raises(StpnError, match="train.steps must be a positive integer"):
        train.TrainConfig(steps=0)
    with pytest.raises(StpnError, match="unknown strategy 'tpu'"):
        train.TrainConfig(strategy="tpu")
    with pytest.raises(StpnError, match="nowhere: dataset directory not found"):
        train.run_train(dataset_dir=str(tmp_path / "nowhere"), workdir=str(work), stream="rgb")
    with pytest.raises(StpnError, match="no TFRecord shards for split 'dev'"):
        train.run_train(dataset_dir=dataset_dir, workdir=str(work), stream="rgb", train_split="dev")
    assert not work.exists()  # refused runs write nothing


def test_steps_not_a_multiple_of_the_epoch_end_in_a_shorter_epoch(dataset_dir, tmp_path):
    """25 steps in epochs of 10: epochs of 10, 10 and 5 steps; the optimizer makes exactly 25 steps, and
    only the newest checkpoints (keep_checkpoints) stay."""
    workdir = str(tmp_path / "work")
    config = dataclasses.replace(TRAIN, steps=25, steps_per_epoch=10, keep_checkpoints=2)
    assert config.epochs == 3
    logs = train.run_train(dataset_dir=dataset_dir, workdir=workdir, stream="rgb", model=MODEL, train=config,
                           config_record={"train": {"steps": 25}}, config_name="demo", verbose=0)
    assert np.isfinite(logs["loss"])
    assert _optimizer_steps(workdir) == 25
    assert sorted(os.listdir(os.path.join(workdir, "rgb", "checkpoints"))) == [
        "epoch-0002.weights.h5", "epoch-0003.weights.h5"]
    # The work directory records its dataset, classes and config for later commands.
    record = WorkDir(workdir).read_record()
    assert record.dataset_dir == os.path.abspath(dataset_dir) and record.classes == CLASSES
    assert record.feature_dim == DIM and record.config == {"train": {"steps": 25}} and record.config_name == "demo"
    with open(os.path.join(workdir, "config.train.rgb.json")) as f:
        assert json.load(f) == {"train": {"steps": 25}}


# ------------------------------------------------------------------------------------------------------
# The CLI: refusals and kills in a subprocess, the runs themselves in this process.


def _cli(repo_dir, *args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return [sys.executable, "-m", "stpn_tf.cli", "train", "--config=demo", *args], env


def test_cli_missing_dataset_and_resolved_config(repo_dir, tmp_path, dataset_dir):
    missing = tmp_path / "no_such_dataset"
    workdir = tmp_path / "work"
    overrides = ["--config.train.steps=7", "--config.train.steps_per_epoch=7", "--config.model.attention_units=5",
                 "--config.train.num_snippets=16"]
    cmd, env = _cli(repo_dir, f"--config.dataset.dir={missing}", f"--workdir={workdir}", "--stream=rgb", *overrides)
    proc = subprocess.run(cmd, cwd=repo_dir, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("stpn train: error:")]
    assert len(errors) == 1, proc.stderr
    assert str(missing) in errors[0] and "not found" in errors[0]
    assert "Traceback" not in proc.stderr and "cudart" not in proc.stderr  # no TensorFlow start-up lines
    assert not workdir.exists()  # a refused run writes nothing
    # The run itself in this process (the same entry point; the refusal above needed a process of its own).
    proc = cli("train", "--config=demo", f"--config.dataset.dir={dataset_dir}", f"--workdir={workdir}",
               "--stream=rgb", *overrides)
    with open(workdir / "config.train.rgb.json") as f:
        config = json.load(f)
    assert config["train"]["steps"] == 7 and config["model"]["attention_units"] == 5
    assert config["dataset"]["dir"] == str(dataset_dir)
    # Values not overridden are the demo config's own.
    from stpn_tf.configs import demo

    assert config["train"]["batch_size"] == demo.get_config().train.batch_size
    assert config["train"]["learning_rate"] == demo.get_config().train.learning_rate
    # Log files get one line per epoch, not progress-bar escape codes (stdout is not a terminal here).
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout and "Epoch 1/1 - 7 steps - " in proc.stdout


def test_cli_resumes_after_sigkill(repo_dir, dataset_dir, tmp_path):
    workdir = tmp_path / "work"
    backup = workdir / "rgb" / "backup"
    steps_per_epoch = 20
    common = [f"--config.dataset.dir={dataset_dir}", f"--workdir={workdir}", "--stream=rgb",
              f"--config.train.steps_per_epoch={steps_per_epoch}", f"--config.train.num_snippets={GRID}",
              f"--config.model.attention_units={UNITS}", "--config.train.shuffle_buffer=16"]
    # Far more epochs than can finish before the kill.
    cmd, env = _cli(repo_dir, *common, f"--config.train.steps={1000 * steps_per_epoch}")
    with open(tmp_path / "first.out", "w") as out, open(tmp_path / "first.err", "w") as err:
        proc = subprocess.Popen(cmd, cwd=repo_dir, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 180
            # Kill right after a backup is complete: its metadata is written last, so a readable epoch
            # means weights and metadata agree, and the next backup is a whole epoch away.
            while read_backup_epoch(backup) is None:
                assert proc.poll() is None, f"training exited early: {(tmp_path / 'first.err').read_text()[-2000:]}"
                assert time.monotonic() < deadline, "no epoch finished within 180 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    saved = read_backup_epoch(backup)
    assert saved is not None and 1 <= saved < 1000
    assert not (workdir / "rgb" / "model.keras").exists()
    first_epochs = [int(e) for e in re.findall(r"Epoch (\d+)/1000", (tmp_path / "first.out").read_text())]
    assert first_epochs[:saved] == list(range(1, saved + 1))

    # Rerun with a schedule one epoch past the saved one: it must run exactly that epoch.
    total = saved + 1
    # The resumed run in this process (the same entry point).
    proc = cli("train", "--config=demo", *common, f"--config.train.steps={total * steps_per_epoch}")
    epochs = [(int(a), int(b)) for a, b in re.findall(r"Epoch (\d+)/(\d+)", proc.stdout)]
    assert epochs == [(total, total)], proc.stdout[-2000:]
    assert isinstance(load_trained(str(workdir), "rgb"), STPN)
    # The optimizer's step counter came back from the backup: a fresh optimizer would count only the one epoch run.
    assert _optimizer_steps(str(workdir)) == total * steps_per_epoch
    assert not backup.exists()
    checkpoints = sorted(os.listdir(workdir / "rgb" / "checkpoints"))
    assert checkpoints[-1] == f"epoch-{total:04d}.weights.h5"


# ------------------------------------------------------------------------------------------------------
# Strategies.


def test_make_strategy():
    default = make_strategy("default")
    assert isinstance(default, tf.distribute.Strategy)
    assert default.num_replicas_in_sync == 1
    one = make_strategy("one_device:/cpu:0")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.num_replicas_in_sync == 1
    with one.scope():
        variable = keras.Variable(np.ones(3, np.float32))
    assert "CPU:0" in variable.value.device
    # A replica function runs on the chosen device and returns the plain value (1 + 2 + 3 = 6).
    result = one.run(tf.function(lambda: tf.reduce_sum(tf.constant([1.0, 2.0, 3.0]))))
    assert float(one.experimental_local_results(result)[0]) == 6.0
    with pytest.raises(StpnError, match="unknown strategy 'tpu'"):
        make_strategy("tpu")


def test_resumed_run_equals_uninterrupted_run(synthetic_dataset, tmp_path, monkeypatch):
    """A run interrupted after epoch 1 and resumed ends with the same weights as one never interrupted:
    the backup restores model and optimizer, and the data pipeline skips the batches already used."""
    kwargs = dict(dataset_dir=synthetic_dataset, stream="rgb", model=ModelConfig(attention_units=4), verbose=0,
                  train=train.TrainConfig(num_snippets=8, batch_size=3, learning_rate=1e-2, steps=8, steps_per_epoch=4))
    train.run_train(workdir=str(tmp_path / "straight"), **kwargs)

    class Crash(keras.callbacks.Callback):
        def __init__(self, *args, **kw):
            super().__init__()

        def on_epoch_end(self, epoch, logs=None):  # runs after BackupAndRestore saved epoch 1
            raise RuntimeError("simulated kill")

    with monkeypatch.context() as m:
        m.setattr(train, "EpochCheckpoints", Crash)
        with pytest.raises(RuntimeError, match="simulated kill"):
            train.run_train(workdir=str(tmp_path / "resumed"), **kwargs)
    assert os.path.exists(tmp_path / "resumed" / "rgb" / "backup" / "training_metadata.json")
    train.run_train(workdir=str(tmp_path / "resumed"), **kwargs)
    a = load_trained(str(tmp_path / "straight"), "rgb").get_weights()
    b = load_trained(str(tmp_path / "resumed"), "rgb").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_joint_model_on_concatenated_streams(synthetic_dataset, tmp_path):
    """The optional joint model (spec section 2): one STPN on [rgb, flow] features, D doubled, trained,
    run over the test split and localized as a single stream."""
    from stpn_tf.inference import predict
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.localize.config import LocalizerConfig
    from stpn_tf.inference.runner import load_serving_model

    dataset_dir = synthetic_dataset
    workdir = str(tmp_path / "work")
    train.run_train(dataset_dir=dataset_dir, workdir=workdir, stream="joint", model=ModelConfig(attention_units=4),
                    train=train.TrainConfig(num_snippets=8, batch_size=3, learning_rate=1e-2, steps=4,
                                            steps_per_epoch=4), verbose=0)
    model = load_trained(workdir, "joint")
    assert model.classifier.kernel.shape == (16, 20)  # 8 RGB + 8 flow features
    serving = load_serving_model(workdir, grid=GridConfig(length=8), streams=("joint",), feature_dim=8,
                                 localizer_config=LocalizerConfig(interpolation=2, class_threshold=0.0,
                                                                  tcam_threshold=0.0, max_detections=5))
    results, raw = predict.predict_records(serving, list_shards(dataset_dir, "test"))
    assert raw["joint/tcam"].shape == (212, 8, 20)
    assert len(results["results"]) == 212 and any(results["results"].values())
    with pytest.raises(StpnError, match="reads 16-d features but the dataset has 20"):
        load_serving_model(workdir, streams=("joint",), feature_dim=10)

"""The private Keras / TensorFlow internals `stpn_tf.training.keras_compat` relies on, checked against the installed
versions: after an upgrade, a failure here names the internal that changed, before a training writes backups
Keras no longer restores. Nothing heavy runs: a 2-input dense model, a few callback calls, one tiny fit.
"""

import inspect
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.training import keras_compat
from stpn_tf.training.callbacks import AtomicBackupAndRestore, backed_up_epochs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pinned(package: str) -> str:
    text = open(os.path.join(REPO, "pyproject.toml")).read()
    match = re.search(rf'"{re.escape(package)}==([^"]+)"', text)
    return match.group(1) if match else "?"


def _changed(internal: str, what: str) -> str:
    """The failure message: which internal, what no longer holds, and the versions involved."""
    return (f"{internal}: {what}. stpn_tf/training/keras_compat.py relies on it as in keras=={_pinned('keras')} / "
            f"tensorflow=={_pinned('tensorflow')} (pinned in pyproject.toml); installed: keras {keras.__version__}, "
            f"tensorflow {tf.__version__}. Adapt keras_compat.py (and its docstring) to the new version.")


def _tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=False)
    model.optimizer.build(model.trainable_variables)  # the backup holds the optimizer's variables too
    return model


@pytest.fixture
def _determinism_kept():
    was_on = keras_compat.op_determinism_enabled()
    yield
    keras_compat.set_op_determinism(was_on)


# ------------------------------------------------------------------------------------------ op determinism


def test_tf_op_determinism_switches(_determinism_kept):
    from tensorflow.python.framework import config as framework_config

    for name in ("is_op_determinism_enabled", "disable_op_determinism"):
        function = getattr(framework_config, name, None)
        assert callable(function), _changed(f"tensorflow.python.framework.config.{name}", "it is gone")
        assert not inspect.signature(function).parameters, _changed(
            f"tensorflow.python.framework.config.{name}", f"it now takes arguments {inspect.signature(function)}")
    keras_compat.set_op_determinism(True)
    assert keras_compat.op_determinism_enabled(), _changed(
        "tensorflow.python.framework.config.is_op_determinism_enabled", "it does not report enable_op_determinism()")
    keras_compat.set_op_determinism(False)
    assert not keras_compat.op_determinism_enabled(), _changed(
        "tensorflow.python.framework.config.disable_op_determinism", "determinism is still on after it")


# ------------------------------------------------------------------------------ BackupAndRestore's files


def test_backup_file_names_are_keras_own(tmp_path):
    backup_dir = str(tmp_path / "backup")
    callback = keras.callbacks.BackupAndRestore(backup_dir)
    expected = keras_compat.backup_files(backup_dir)
    for attribute, ours in (("_weights_path", expected.weights), ("_training_metadata_path", expected.metadata),
                            ("_prev_weights_path", expected.previous_weights),
                            ("_prev_training_metadata_path", expected.previous_metadata)):
        internal = f"keras.callbacks.BackupAndRestore.{attribute}"
        assert hasattr(callback, attribute), _changed(internal, "the attribute is gone")
        assert getattr(callback, attribute) == ours, _changed(
            internal, f"it is {getattr(callback, attribute)!r}, keras_compat.backup_files says {ours!r}")


def test_save_model_is_the_end_of_epoch_save(tmp_path):
    internal = "keras.callbacks.BackupAndRestore._save_model"
    method = getattr(keras.callbacks.BackupAndRestore, "_save_model", None)
    assert callable(method), _changed(internal, "the method is gone")
    assert list(inspect.signature(method).parameters) == ["self"], _changed(
        internal, f"its signature is now {inspect.signature(method)}")
    written = []

    class Recorder(keras_compat.BackupWriterHook):
        def write_backup(self, files, metadata):
            written.append((files, metadata))

    backup_dir = str(tmp_path / "backup")
    Recorder(backup_dir).on_epoch_end(2)
    assert len(written) == 1, _changed(internal, "on_epoch_end no longer calls it")
    files, metadata = written[0]
    assert files == keras_compat.backup_files(backup_dir), _changed(internal, f"its paths are now {files}")
    assert metadata == {"epoch": 3, "batch": 0}, _changed(
        "keras.callbacks.BackupAndRestore._current_epoch / _last_batch_seen",
        f"after on_epoch_end(2) the metadata is {metadata}, expected {{'epoch': 3, 'batch': 0}}")


def test_keras_restores_our_backup_and_falls_back_like_backed_up_epochs(tmp_path):
    """Our atomic writes land where Keras's restore reads; a damaged latest file falls back to the `.bkp`
    copy in Keras exactly as `backed_up_epochs` predicts."""
    backup_dir = str(tmp_path / "backup")
    files = keras_compat.backup_files(backup_dir)
    trained = _tiny_model(seed=1)
    writer = AtomicBackupAndRestore(backup_dir, double_checkpoint=True)
    writer.set_model(trained)
    writer.on_epoch_end(0)  # backup of epoch 1
    epoch_one = [w.copy() for w in trained.get_weights()]
    trained.set_weights([w + 1.0 for w in epoch_one])
    writer.on_epoch_end(1)  # backup of epoch 2; epoch 1 moves to the .bkp copies
    assert backed_up_epochs(backup_dir) == 2

    restored = _tiny_model(seed=2)
    keras_compat.clear_resume_epoch(restored)
    reader = keras.callbacks.BackupAndRestore(backup_dir)
    reader.set_model(restored)
    reader.on_train_begin()
    assert keras_compat.resume_epoch(restored) == 2, _changed(
        "keras.Model._initial_epoch", "BackupAndRestore's restore no longer stores the finished epochs there")
    for a, b in zip(restored.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=_changed("BackupAndRestore restore", "it read other weights"))

    with open(files.weights, "r+b") as f:  # a kill while the latest weights were written
        f.truncate(100)
    assert backed_up_epochs(backup_dir) == 1
    fallback = _tiny_model(seed=3)
    keras_compat.clear_resume_epoch(fallback)
    reader = keras.callbacks.BackupAndRestore(backup_dir)
    reader.set_model(fallback)
    reader.on_train_begin()
    assert keras_compat.resume_epoch(fallback) == 1, _changed(
        "BackupAndRestore.on_train_begin", "a damaged latest backup no longer falls back to the .bkp copy")
    for a, b in zip(fallback.get_weights(), epoch_one):
        np.testing.assert_array_equal(a, b, err_msg=_changed("BackupAndRestore fallback", "it read other weights"))


# -------------------------------------------------------------------------------- the epoch to resume at


def test_fit_starts_at_the_initial_epoch_attribute():
    internal = "keras.Model._initial_epoch"
    model = _tiny_model()
    assert hasattr(model, "_initial_epoch"), _changed(internal, "a new model has no such attribute")
    assert keras_compat.resume_epoch(model) == 0
    model._initial_epoch = 2  # what BackupAndRestore's restore does
    history = model.fit(np.ones((4, 2), np.float32), np.ones((4, 1), np.float32), epochs=3, batch_size=4,
                        verbose=0)
    assert history.epoch == [2], _changed(internal, f"fit(epochs=3) after it was set to 2 ran epochs {history.epoch}")
    keras_compat.clear_resume_epoch(model)
    assert keras_compat.resume_epoch(model) == 0

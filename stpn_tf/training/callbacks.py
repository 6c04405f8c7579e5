"""The callbacks of a training: backup and resume, per-epoch checkpoints, per-epoch log lines, stop at a step."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from typing import Any

import keras

from stpn_tf.core.atomic import atomic_output, atomic_write_text
from stpn_tf.training import keras_compat


class AtomicBackupAndRestore(keras_compat.BackupWriterHook):
    """BackupAndRestore whose backup files are written to temporary names and renamed, so a write that
    fails (a full disk) or a kill leaves the previous backup whole instead of a half-written one.

    Keras's own restore (with its fallback to the `.bkp` copy of the epoch before) is unchanged.
    """

    def write_backup(self, files: keras_compat.BackupFiles, metadata: dict[str, Any]) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        for path, previous in ((files.weights, files.previous_weights), (files.metadata, files.previous_metadata)):
            if self.double_checkpoint and os.path.exists(path):
                with atomic_output(previous) as temporary:
                    shutil.copyfile(path, temporary)
        with atomic_output(files.weights) as temporary:
            self.model.save_weights(temporary)
        atomic_write_text(files.metadata, json.dumps(metadata))


class RestoreOnly(keras_compat.BackupWriterHook):
    """A non-chief worker's BackupAndRestore: restores the chief's backup, never writes or deletes it."""

    def write_backup(self, files: keras_compat.BackupFiles, metadata: dict[str, Any]) -> None:
        pass

    def on_train_end(self, logs=None):
        pass


def backed_up_epochs(backup_dir: str) -> int:
    """Epochs finished by an interrupted run (from BackupAndRestore's metadata), 0 when starting fresh.

    Mirrors BackupAndRestore's own fallback: when the latest weights file cannot be opened (a kill while
    it was written), the previous backup, and so its metadata, is the one restored.
    """
    import h5py

    files = keras_compat.backup_files(backup_dir)
    metadata = files.metadata
    if os.path.exists(files.weights):
        try:
            h5py.File(files.weights, "r").close()
        except OSError:
            metadata = files.previous_metadata
    return keras_compat.read_backup_epoch(metadata) or 0


class FirstBatch(keras.callbacks.Callback):
    """Notes whether training got as far as its first batch (failures before it come from restoring)."""

    started = False

    def on_train_batch_begin(self, batch, logs=None):
        self.started = True


class StopAtStep(keras.callbacks.Callback):
    """Ends training once the optimizer has made `steps` steps (a shorter last epoch)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = int(steps)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


class EpochLog(keras.callbacks.Callback):
    """One line per epoch (for logs, where Keras's progress bar leaves escape codes), with the real step count.

    `Epoch 3/48 - 500 steps - 11s - 21.4 ms/step - classification_loss: 0.1078 - loss: 0.1399 - ...`
    """

    def __init__(self, epochs: int, stream=None):
        super().__init__()
        self.epochs = epochs
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()
        self._step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        steps = int(self.model.optimizer.iterations.numpy()) - self._step
        seconds = time.monotonic() - self._start
        values = " - ".join(f"{k}: {float(v):.4f}" for k, v in sorted((logs or {}).items()))
        print(f"Epoch {epoch + 1}/{self.epochs} - {steps} steps - {seconds:.0f}s - "
              f"{1000 * seconds / max(steps, 1):.1f} ms/step - {values}", file=self.stream or sys.stdout, flush=True)


class EpochCheckpoints(keras.callbacks.Callback):
    """Writes `epoch-NNNN.weights.h5` atomically after every epoch and keeps only the newest `keep`."""

    PATTERN = re.compile(r"^epoch-(\d{4,})\.weights\.h5$")

    def __init__(self, directory: str, keep: int):
        super().__init__()
        self.directory = directory
        self.keep = int(keep)

    def on_epoch_end(self, epoch, logs=None):
        if self.keep == 0:
            return
        os.makedirs(self.directory, exist_ok=True)
        with atomic_output(os.path.join(self.directory, f"epoch-{epoch + 1:04d}.weights.h5")) as temporary:
            self.model.save_weights(temporary)
        found = sorted((int(m.group(1)), name) for name in os.listdir(self.directory)
                       for m in [self.PATTERN.match(name)] if m)
        for _, name in found[:-self.keep]:
            os.remove(os.path.join(self.directory, name))

"""The one module that relies on private Keras and TensorFlow internals (pinned: keras 3.15.1, TF 2.21.0).

Training needs what the public APIs do not offer: switching TF op determinism off again; writing
`BackupAndRestore`'s backup atomically (its own write is a plain overwrite) and reading how many epochs a
backup holds before Keras restores it (its file names and format); and starting at the epoch a restore
left, as `fit` does, in the multi-worker loop (where `fit` cannot run). Each reliance sits behind
one function or class below whose docstring says what it relies on; `tests/test_keras_compat.py` checks every
one against the installed versions, so an upgrade that changes one fails there, naming it, before training
silently writes backups Keras no longer reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework import config as _tf_framework_config

# ------------------------------------------------------------------------------------------ op determinism


def op_determinism_enabled() -> bool:
    """Whether TF op determinism is on.

    Relies on `tensorflow.python.framework.config.is_op_determinism_enabled` (private module): TF exports only
    `tf.config.experimental.enable_op_determinism`, and training must put back the state it found.
    """
    return _tf_framework_config.is_op_determinism_enabled()


def set_op_determinism(enabled: bool) -> None:
    """Switches TF op determinism on or off.

    Relies on `tensorflow.python.framework.config.disable_op_determinism` (private module): TF has no public
    switch-off, and a process that trains twice (the demo, the tests) needs it, because Keras refuses
    `jit_compile` while determinism is on.
    """
    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        _tf_framework_config.disable_op_determinism()


# ------------------------------------------------------------------------------ BackupAndRestore's files

# The names `keras.callbacks.BackupAndRestore` gives its files inside `backup_dir`; its restore reads them.
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
PREVIOUS_SUFFIX = ".bkp"  # double_checkpoint: the copy of the backup of the epoch before


@dataclasses.dataclass(frozen=True)
class BackupFiles:
    """The files of one `BackupAndRestore` backup (Keras's names, not public API).

    Attributes:
      weights: The model's and optimizer's variables (`latest.weights.h5`).
      metadata: JSON `{"epoch": E, "batch": B}`, E the epochs finished (`training_metadata.json`).
      previous_weights: `weights` of the backup before (`.bkp`), restored when `weights` cannot be opened.
      previous_metadata: `metadata` of the backup before (`.bkp`).
    """

    weights: str
    metadata: str
    previous_weights: str
    previous_metadata: str


def backup_files(backup_dir: str) -> BackupFiles:
    """The paths Keras's `BackupAndRestore(backup_dir)` writes and restores from (local directories).

    Relies on the file names Keras 3.15 hard-codes in `BackupAndRestore.__init__` (`_weights_path`,
    `_training_metadata_path` and their `.bkp` copies); the resume check reads them before Keras runs.
    """
    weights = os.path.join(backup_dir, BACKUP_WEIGHTS)
    metadata = os.path.join(backup_dir, BACKUP_METADATA)
    return BackupFiles(weights=weights, metadata=metadata, previous_weights=weights + PREVIOUS_SUFFIX,
                       previous_metadata=metadata + PREVIOUS_SUFFIX)


def read_backup_epoch(metadata_path: str) -> int | None:
    """The epochs finished according to a backup's metadata file; None when it is absent or unreadable.

    Relies on Keras's metadata format, `{"epoch": E, "batch": B}`, which its restore reads back.
    """
    if not os.path.exists(metadata_path):
        return None
    try:
        with open(metadata_path) as f:
            return int(json.load(f)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


class BackupWriterHook(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backup writing is `write_backup`, a method subclasses define.

    Keras's restore (`on_train_begin`, with its fallback to the `.bkp` copy) and its deletion of the backup
    after training are unchanged. Relies on three internals of Keras 3.15's class: the end-of-epoch save is
    the method `_save_model(self)` (called from `on_epoch_end`); the paths are `_weights_path`,
    `_training_metadata_path`, `_prev_weights_path`, `_prev_training_metadata_path`; and the metadata it
    writes is `{"epoch": _current_epoch, "batch": _last_batch_seen}`.
    """

    def _save_model(self):
        files = BackupFiles(weights=self._weights_path, metadata=self._training_metadata_path,
                            previous_weights=self._prev_weights_path,
                            previous_metadata=self._prev_training_metadata_path)
        self.write_backup(files, {"epoch": self._current_epoch, "batch": self._last_batch_seen})

    def write_backup(self, files: BackupFiles, metadata: dict[str, Any]) -> None:
        """Writes the model's weights to `files.weights` and `json.dumps(metadata)` to `files.metadata`.

        Args:
          files: Where Keras's restore looks.
          metadata: What Keras's restore expects in the metadata file, in Keras's order.
        """
        raise NotImplementedError


# -------------------------------------------------------------------------------- the epoch to resume at


def clear_resume_epoch(model: keras.Model) -> None:
    """Forgets the epoch a previous restore left on `model` (before a restore sets it again).

    Relies on `Model._initial_epoch` (Keras 3.15 `Trainer`): `BackupAndRestore`'s restore stores the
    finished epochs there, and `fit` starts at `model._initial_epoch or initial_epoch`.
    """
    model._initial_epoch = None


def resume_epoch(model: keras.Model) -> int:
    """The epoch to start at: the finished epochs `BackupAndRestore` restored, 0 when nothing was restored.

    Relies on `Model._initial_epoch`, as `clear_resume_epoch` does; it reproduces `fit`'s own start.
    """
    return model._initial_epoch or 0

"""Training one STPN stream with `model.fit`: the protocol, checks before any write, resume after a kill."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from stpn_tf.artifacts.shards import list_shards
from stpn_tf.data import pipeline
from stpn_tf.data.records.reader import corrupt_record_errors
from stpn_tf.core.errors import StpnError, WriteError
from stpn_tf.core.atomic import atomic_output, remove_temporaries, write_error
from stpn_tf.artifacts.dataset_dir import read_dataset_info
from stpn_tf.artifacts.workdir import WorkDir, WorkDirRecord, check_stream
from stpn_tf.model.stpn import ModelConfig
from stpn_tf.training import keras_compat
from stpn_tf.training.callbacks import (AtomicBackupAndRestore, EpochCheckpoints, EpochLog, FirstBatch, RestoreOnly,
                                        StopAtStep, backed_up_epochs)
from stpn_tf.training.multi_worker import train_loop
from stpn_tf.training.strategy import check_strategy, first_line, is_chief, make_strategy


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training protocol of one stream (spec section 2).

    Attributes:
      num_snippets: Snippets sampled per video (400, stratified random perturbation).
      batch_size: Videos per step (6).
      learning_rate: Adam's learning rate (1e-4).
      steps: Optimizer steps in all (24,000).
      steps_per_epoch: Steps between checkpoints / log lines; when `steps` is not a multiple of it, the
        last epoch is shorter.
      shuffle_buffer: Videos in the shuffle buffer.
      cache_features: Keep the decoded features of the stream in memory after the first epoch.
      seed: Seed of initialization, shuffling and sampling.
      deterministic: Switch TF op determinism on (same seed, same machine: identical weights).
      jit_compile: XLA-compile the train step.
      strategy: "default", "mirrored" (the local GPUs), "multi_worker" (MultiWorkerMirroredStrategy over the
        cluster in TF_CONFIG; `batch_size` is the global batch) or "one_device:<device>".
      keep_checkpoints: Per-epoch weight files kept (the newest); 0 keeps none.
    """

    num_snippets: int = 400
    batch_size: int = 6
    learning_rate: float = 1e-4
    steps: int = 24000
    steps_per_epoch: int = 500
    shuffle_buffer: int = 256
    cache_features: bool = False
    seed: int = 0
    deterministic: bool = True
    jit_compile: bool = True
    strategy: str = "default"
    keep_checkpoints: int = 3

    def __post_init__(self):
        for name in ("num_snippets", "batch_size", "steps", "steps_per_epoch", "shuffle_buffer"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise StpnError(f"train.{name} must be a positive integer, got {value}")
        if self.keep_checkpoints < 0:
            raise StpnError(f"train.keep_checkpoints must be >= 0, got {self.keep_checkpoints}")
        if not self.learning_rate > 0:
            raise StpnError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        check_strategy(self.strategy)

    @property
    def epochs(self) -> int:
        """Epochs of `steps_per_epoch` steps; the last one is shorter when the steps do not divide."""
        return math.ceil(self.steps / self.steps_per_epoch)


def save_model_atomically(model: keras.Model, path: str) -> None:
    """Saves a `.keras` file under a temporary name in the same directory, then renames it."""
    with atomic_output(path) as temporary:
        model.save(temporary)


def run_train(
    *,
    dataset_dir: str,
    workdir: str,
    stream: str,
    train_split: str = "train",
    model: ModelConfig = ModelConfig(),
    train: TrainConfig = TrainConfig(),
    config_record: Mapping[str, Any] | None = None,
    config_name: str = "",
    verbose: int | str | None = None,
) -> dict[str, Any]:
    """Trains the model of one stream and writes `<workdir>/<stream>/model.keras`.

    Resumable: a `BackupAndRestore` backup in `<workdir>/<stream>/backup` lets a killed run continue from
    its last finished epoch. A finished run is not retrained. Everything is checked before anything is
    written; a second run on the same stream and work directory is refused while the first one runs.

    Args:
      dataset_dir: Directory written by `stpn build-dataset`.
      workdir: Training work directory (stpn_tf.artifacts.workdir).
      stream: "rgb", "flow" or "joint".
      train_split: Dataset split to train on.
      model: Architecture settings.
      train: Training protocol.
      config_record: The resolved config to record in the work directory (workdir.json and
        config.train.<stream>.json), so later commands need no other flag.
      config_name: The config's name or file, recorded with it.
      verbose: 0 silent, 1 Keras's progress bar, 2 one line per epoch; None: the bar on a terminal, one
        line per epoch otherwise (log files).

    Returns:
      The last epoch's logs (losses); {} when the stream was already trained.
    """
    check_stream(stream)
    # MultiWorkerMirroredStrategy configures the collective ops of the TF runtime: before its first op.
    dist = make_strategy(train.strategy)
    chief = is_chief(train.strategy)
    info = read_dataset_info(dataset_dir)
    shards = list_shards(dataset_dir, train_split)
    work = WorkDir(workdir)
    if work.is_trained(stream):
        logging.info("%s exists: the %s stream is already trained (delete it to retrain)", work.model_path(stream),
                     stream)
        return {}
    if work.is_workdir() and work.classes() != info.classes:
        raise StpnError(f"{workdir} holds models of other classes than {dataset_dir}; use another --workdir")
    backup_dir = work.backup_dir(stream)
    done_epochs = backed_up_epochs(backup_dir)
    if done_epochs >= train.epochs:
        raise StpnError(f"{backup_dir}: the interrupted run finished {done_epochs} epochs, but this run has only "
                        f"{train.epochs} (steps or steps_per_epoch changed?); resume with the same settings, or "
                        "delete the backup directory to start over")
    if not chief:  # the chief holds the lock and writes the work directory; this worker only trains with it
        return _fit(work, stream, info, shards, done_epochs, model, train, verbose, dist, chief=False)
    with work.lock(stream):
        work.write_classes(info.classes)
        record = WorkDirRecord(dataset_dir=os.path.abspath(dataset_dir), classes=info.classes,
                               feature_dim=info.feature_dim, config=dict(config_record or {}), config_name=config_name)
        work.write_record(record)
        if config_record is not None:
            work.write_config("train", dict(config_record), stream)
        return _fit(work, stream, info, shards, done_epochs, model, train, verbose, dist, chief=True)


def _fit(work: WorkDir, stream: str, info, shards, done_epochs: int, model_config: ModelConfig,
         train: TrainConfig, verbose, dist: tf.distribute.Strategy, chief: bool) -> dict[str, Any]:
    """Builds and fits the model (`model.fit`, or `train_loop` under multi_worker); the chief saves it."""
    keras.utils.set_random_seed(train.seed)
    multi_worker = isinstance(dist, tf.distribute.MultiWorkerMirroredStrategy)
    stream_dir = work.stream_dir(stream)
    backup_dir = work.backup_dir(stream)
    if chief:
        remove_temporaries(stream_dir)
    classes = info.classes
    dataset = pipeline.make_train_dataset(
        shards, stream=stream, num_classes=len(classes), feature_dim=info.feature_dim,
        num_snippets=train.num_snippets, batch_size=train.batch_size, shuffle_buffer=train.shuffle_buffer,
        seed=train.seed, skip_batches=done_epochs * train.steps_per_epoch, cache=train.cache_features)
    if done_epochs:
        logging.info("resuming the %s stream after epoch %d from %s", stream, done_epochs, backup_dir)
    jit_compile = train.jit_compile
    if multi_worker and jit_compile and not tf.config.list_physical_devices("GPU"):
        # XLA has no CPU kernels for the collective ops that sum the workers' gradients.
        logging.info("train.jit_compile is ignored on CPU workers under multi_worker (XLA has no CPU collectives)")
        jit_compile = False
    # Keras refuses XLA when op determinism is already on (some XLA GPU kernels are non-deterministic), so
    # compile first and switch determinism on afterwards. The train step here (dense layers, reductions)
    # runs deterministically under XLA on CPU; tests/test_train.py checks two runs give identical weights.
    determinism_was_on = keras_compat.op_determinism_enabled()
    keras_compat.set_op_determinism(False)
    with dist.scope():
        model = model_config.build(len(classes))
        model.compile(optimizer=keras.optimizers.Adam(train.learning_rate), jit_compile=jit_compile)
        # BackupAndRestore needs built variables before fit() (it restores into them).
        input_dim = info.feature_dim * (2 if stream == "joint" else 1)
        model({"features": tf.zeros([1, train.num_snippets, input_dim]), "mask": tf.ones([1, train.num_snippets])})
        if multi_worker:  # the restore in train_loop runs outside the scope, where no variable may be created
            model.optimizer.build(model.trainable_variables)
    if chief:
        callbacks = [
            # double_checkpoint: a kill while the backup is being written falls back to the previous one.
            AtomicBackupAndRestore(backup_dir, double_checkpoint=True),
            keras.callbacks.TensorBoard(work.logs_dir(stream), update_freq="epoch"),
            EpochCheckpoints(work.checkpoints_dir(stream), train.keep_checkpoints),
        ]
    else:  # restores from the chief's backup (on storage all workers see), writes nothing
        callbacks = [RestoreOnly(backup_dir)]
    callbacks += [StopAtStep(train.steps), first_batch := FirstBatch()]
    last = train.steps - (train.epochs - 1) * train.steps_per_epoch
    logging.info("training %s stream: %d steps (%d epoch%s of %d%s), batch %d, %d classes, D=%d%s", stream,
                 train.steps, train.epochs, "" if train.epochs == 1 else "s", train.steps_per_epoch,
                 f", the last of {last}" if last != train.steps_per_epoch else "", train.batch_size, len(classes),
                 info.feature_dim, f", {dist.num_replicas_in_sync} replicas" if multi_worker else "")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose == 2:
        callbacks.insert(0, EpochLog(train.epochs))  # before the backup: a line per epoch that can be resumed
    keras_compat.set_op_determinism(train.deterministic)
    failure = None
    hooks = sys.unraisablehook, sys.excepthook
    sys.unraisablehook, sys.excepthook = _quiet_failed_writes(*hooks)
    try:
        with corrupt_record_errors(shards):
            if multi_worker:
                history = train_loop(model, dist, dataset, epochs=train.epochs, steps_per_epoch=train.steps_per_epoch,
                                     callbacks=callbacks, verbose=1 if verbose == 1 else 0)
            else:
                history = model.fit(dataset, epochs=train.epochs, steps_per_epoch=train.steps_per_epoch,
                                    callbacks=callbacks, verbose=1 if verbose == 1 else 0,
                                    shuffle=False)  # the dataset shuffles itself
    except (OSError, RuntimeError, tf.errors.OpError, ValueError) as error:
        resume = "free space and rerun the same command to resume from the last complete backup"
        if isinstance(error, WriteError):  # from an atomic write: it names the file
            failure = WriteError(f"{error}; {resume}")
        else:
            failure = write_error(stream_dir, error, kept=f"the complete backups, checkpoints and logs are kept; "
                                  f"{resume}")
        restoring = not first_batch.started and os.path.isdir(backup_dir)
        if failure is None and restoring and isinstance(error, (OSError, RuntimeError)):
            failure = StpnError(f"{backup_dir}: the backup of the interrupted run is damaged "
                                f"({first_line(error)}); delete the directory to train the stream from the start")
        if failure is None:
            raise
    finally:
        keras_compat.set_op_determinism(determinism_was_on)
        sys.unraisablehook, sys.excepthook = hooks
    if failure is not None:
        raise failure
    logs = {k: float(v[-1]) for k, v in history.history.items()} if history.history else {}
    if not chief:
        logging.info("worker finished (%s); the chief saves the model", ", ".join(f"{k}={v:.4f}" for k, v in logs.items()))
        return logs
    final_path = work.model_path(stream)
    save_model_atomically(model, final_path)
    logging.info("saved %s (%s)", final_path, ", ".join(f"{k}={v:.4f}" for k, v in logs.items()))
    return logs


def _quiet_failed_writes(unraisable_hook, except_hook):
    """Hooks that drop h5py's reports of a write that failed on a full disk (printed from its destructors
    while Keras closes the file; the failure itself reaches the user as one WriteError line) and pass
    everything else on."""
    def unraisable(report):
        if write_error("", report.exc_value) is None:
            unraisable_hook(report)

    def excepthook(kind, value, traceback):
        if write_error("", value) is None:
            except_hook(kind, value, traceback)

    return unraisable, excepthook

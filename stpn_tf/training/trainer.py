"""Training one STPN stream with `model.fit`: checkpoints, TensorBoard, resume after a kill."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import config as tf_config  # is/disable_op_determinism

from stpn_tf.data import pipeline, tfrecord
from stpn_tf.core.errors import StpnError, WriteError
from stpn_tf.core.atomic import atomic_output, atomic_write_text, remove_temporaries, write_error
from stpn_tf.artifacts.dataset_dir import read_dataset_info
from stpn_tf.artifacts.workdir import WorkDir, WorkDirRecord, check_stream
from stpn_tf.model.stpn import ModelConfig

STRATEGIES = ("default", "mirrored", "multi_worker", "one_device:<device>")
_STRATEGY_ERROR = "expected 'default', 'mirrored', 'multi_worker' or 'one_device:<device>'"


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
        if self.strategy not in ("default", "mirrored", "multi_worker") and not self.strategy.startswith("one_device:"):
            raise StpnError(f"unknown strategy {self.strategy!r}; {_STRATEGY_ERROR}")

    @property
    def epochs(self) -> int:
        """Epochs of `steps_per_epoch` steps; the last one is shorter when the steps do not divide."""
        return math.ceil(self.steps / self.steps_per_epoch)


_MULTI_WORKER: tf.distribute.MultiWorkerMirroredStrategy | None = None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """"default" (one device), "mirrored" (all local GPUs, or the CPU), "multi_worker" (the cluster in
    TF_CONFIG; created once per process, before TF runs its first op) or "one_device:<device>"."""
    global _MULTI_WORKER
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if _MULTI_WORKER is None:
            cluster = cluster_task()  # checks TF_CONFIG
            try:
                _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
            except RuntimeError as error:
                raise StpnError(f"train.strategy=multi_worker: cannot start worker {cluster[0]}:{cluster[1]} "
                                f"({_first_line(error)}); the strategy must be created before TensorFlow runs "
                                "anything else in the process") from None
        return _MULTI_WORKER
    if name.startswith("one_device:"):
        return tf.distribute.OneDeviceStrategy(name.split(":", 1)[1])
    raise StpnError(f"unknown strategy {name!r}; {_STRATEGY_ERROR}")


def cluster_task() -> tuple[str, int, bool]:
    """(task type, task index, is chief) of this process from TF_CONFIG, checked.

    The chief is the "chief" task, or worker 0 when the cluster has no chief: it alone writes the work
    directory (records, backups, checkpoints, logs, the model); the other workers restore from its backup.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        raise StpnError("train.strategy=multi_worker needs TF_CONFIG: the cluster and this process's task, e.g. "
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}')
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        kind, index = str(task["type"]), int(task["index"])
        members = cluster[kind]
    except (ValueError, KeyError, TypeError) as error:
        raise StpnError(f"TF_CONFIG is not a cluster with this task in it ({type(error).__name__}: {error}); "
                        'expected {"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}') from None
    if not isinstance(members, list) or not 0 <= index < len(members):
        raise StpnError(f"TF_CONFIG: task {kind}:{index} is not in the cluster's {kind} list ({members})")
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return kind, index, chief


def _set_op_determinism(enabled: bool) -> None:
    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        # TF has no public switch-off; a process that trains twice (the demo) needs it for the second run.
        tf_config.disable_op_determinism()


def save_model_atomically(model: keras.Model, path: str) -> None:
    """Saves a `.keras` file under a temporary name in the same directory, then renames it."""
    with atomic_output(path) as temporary:
        model.save(temporary)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose backup files are written to temporary names and renamed, so a write that
    fails (a full disk) or a kill leaves the previous backup whole instead of a half-written one.

    Keras's own restore (with its fallback to the `.bkp` copy of the epoch before) is unchanged.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        for path, previous in ((self._weights_path, self._prev_weights_path),
                               (self._training_metadata_path, self._prev_training_metadata_path)):
            if self.double_checkpoint and os.path.exists(path):
                with atomic_output(previous) as temporary:
                    shutil.copyfile(path, temporary)
        with atomic_output(self._weights_path) as temporary:
            self.model.save_weights(temporary)
        atomic_write_text(self._training_metadata_path,
                          json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


class RestoreOnly(keras.callbacks.BackupAndRestore):
    """A non-chief worker's BackupAndRestore: restores the chief's backup, never writes or deletes it."""

    def _save_model(self):
        pass

    def on_train_end(self, logs=None):
        pass


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
    chief = cluster_task()[2] if train.strategy == "multi_worker" else True
    info = read_dataset_info(dataset_dir)
    shards = tfrecord.list_shards(dataset_dir, train_split)
    work = WorkDir(workdir)
    if work.is_trained(stream):
        logging.info("%s exists: the %s stream is already trained (delete it to retrain)", work.model_path(stream),
                     stream)
        return {}
    if work.is_workdir() and work.classes() != info.classes:
        raise StpnError(f"{workdir} holds models of other classes than {dataset_dir}; use another --workdir")
    backup_dir = work.backup_dir(stream)
    done_epochs = _backed_up_epochs(backup_dir)
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
    determinism_was_on = tf_config.is_op_determinism_enabled()
    _set_op_determinism(False)
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
    logging.info("training %s stream: %d steps (%d epochs of %d%s), batch %d, %d classes, D=%d%s", stream,
                 train.steps, train.epochs, train.steps_per_epoch,
                 f", the last of {last}" if last != train.steps_per_epoch else "", train.batch_size, len(classes),
                 info.feature_dim, f", {dist.num_replicas_in_sync} replicas" if multi_worker else "")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose == 2:
        callbacks.insert(0, EpochLog(train.epochs))  # before the backup: a line per epoch that can be resumed
    _set_op_determinism(train.deterministic)
    failure = None
    hooks = sys.unraisablehook, sys.excepthook
    sys.unraisablehook, sys.excepthook = _quiet_failed_writes(*hooks)
    try:
        with tfrecord.corrupt_record_errors(shards):
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
                                f"({_first_line(error)}); delete the directory to train the stream from the start")
        if failure is None:
            raise
    finally:
        _set_op_determinism(determinism_was_on)
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


def train_loop(model: keras.Model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset, *, epochs: int,
               steps_per_epoch: int, callbacks: list[keras.callbacks.Callback], verbose: int = 0
               ) -> keras.callbacks.History:
    """`model.fit` for strategies Keras 3's fit does not run under (MultiWorkerMirroredStrategy, Keras issue
    20585): the model's own `train_step` under `strategy.run` over the distributed dataset, with the same
    callbacks (backup and restore, checkpoints, logs, stop at a step) called at the same points as fit.

    `dataset` yields global batches; each worker reads all of it and keeps its replicas' slices of every
    batch (auto-shard policy DATA), so the workers together see the batch sequence of one process with the
    same global batch, and a resumed run skips batches the same way. The logs are the replicas' mean.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history], add_progbar=verbose == 1, model=model, verbose=verbose, epochs=epochs,
        steps=steps_per_epoch)
    # XLA (GPU workers) compiles the replica step; the loop around it stays a plain graph.
    step_fn = tf.function(model.train_step, jit_compile=True) if model.jit_compile else model.train_step

    @tf.function
    def distributed_step(iterator):
        logs = strategy.run(step_fn, args=(next(iterator),))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None) for name, value in logs.items()}

    model.stop_training = False
    model._initial_epoch = None  # set by BackupAndRestore's restore
    callback_list.on_train_begin()
    logs: dict[str, Any] = {}
    for epoch in range(model._initial_epoch or 0, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            callback_list.on_train_batch_begin(batch)
            logs = distributed_step(iterator)
            callback_list.on_train_batch_end(batch, logs)
            if model.stop_training:
                break
        logs = {name: float(value) for name, value in logs.items()}
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _backed_up_epochs(backup_dir: str) -> int:
    """Epochs finished by an interrupted run (from BackupAndRestore's metadata), 0 when starting fresh.

    Mirrors BackupAndRestore's own fallback: when the latest weights file cannot be opened (a kill while
    it was written), the previous backup, and so its metadata, is the one restored.
    """
    import h5py

    weights = os.path.join(backup_dir, "latest.weights.h5")
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(weights):
        try:
            h5py.File(weights, "r").close()
        except OSError:
            metadata += ".bkp"
    if not os.path.exists(metadata):
        return 0
    try:
        with open(metadata) as f:
            return int(json.load(f)["epoch"])
    except (ValueError, KeyError, TypeError):
        return 0

"""Training one STPN stream with `model.fit`: checkpoints, TensorBoard, resume after a kill."""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import config as tf_config  # is/disable_op_determinism

from stpn_tf.data import pipeline, tfrecord
from stpn_tf.data.annotations import atomic_write_text
from stpn_tf.errors import StpnError
from stpn_tf.model.stpn import MODEL_STREAMS, STPN, stream_model_path


def make_strategy(name: str) -> tf.distribute.Strategy:
    """"default" (one device), "mirrored" (all local GPUs, or the CPU) or "one_device:<device>"."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name.startswith("one_device:"):
        return tf.distribute.OneDeviceStrategy(name.split(":", 1)[1])
    raise StpnError(f"unknown strategy {name!r}; expected 'default', 'mirrored' or 'one_device:<device>'")


def _set_op_determinism(enabled: bool) -> None:
    if enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        # TF has no public switch-off; a process that trains twice (the demo) needs it for the second run.
        tf_config.disable_op_determinism()


def save_model_atomically(model: keras.Model, path: str) -> None:
    """Saves a `.keras` file under a temporary name in the same directory, then renames it."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")  # Keras needs the .keras suffix.
    model.save(tmp)
    os.replace(tmp, path)


def run_train(
    *,
    dataset_dir: str,
    workdir: str,
    stream: str,
    train_split: str = "train",
    attention_units: int = 256,
    pooling: str = "mean",
    variant: str = "full",
    beta: float = 1e-4,
    num_snippets: int = 400,
    batch_size: int = 6,
    learning_rate: float = 1e-4,
    steps: int = 24000,
    steps_per_epoch: int = 500,
    shuffle_buffer: int = 256,
    cache_features: bool = False,
    seed: int = 0,
    deterministic: bool = True,
    jit_compile: bool = True,
    strategy: str = "default",
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Trains the model of one stream and writes `<workdir>/<stream>/model.keras`.

    Resumable: a `BackupAndRestore` backup in `<workdir>/<stream>/backup` lets a killed run continue from
    its last finished epoch (an epoch is `steps_per_epoch` steps). A finished run is not retrained.

    Returns:
        The last epoch's logs (losses).
    """
    if stream not in MODEL_STREAMS:
        raise StpnError(f"unknown stream {stream!r}; expected one of {MODEL_STREAMS}")
    if steps < 1 or steps_per_epoch < 1 or steps % steps_per_epoch:
        raise StpnError(f"steps ({steps}) must be a positive multiple of steps_per_epoch ({steps_per_epoch})")
    meta = tfrecord.read_dataset_metadata(dataset_dir)
    shards = tfrecord.list_shards(dataset_dir, train_split)
    classes = meta["classes"]
    stream_dir = os.path.join(workdir, stream)
    os.makedirs(stream_dir, exist_ok=True)
    atomic_write_text(os.path.join(workdir, "classes.json"), json.dumps(classes))

    final_path = stream_model_path(workdir, stream)
    if os.path.exists(final_path):
        logging.info("%s exists: the %s stream is already trained (delete it to retrain)", final_path, stream)
        return {}

    keras.utils.set_random_seed(seed)
    dist = make_strategy(strategy)
    backup_dir = os.path.join(stream_dir, "backup")
    done_epochs = _backed_up_epochs(backup_dir)
    dataset = pipeline.make_train_dataset(
        shards, stream=stream, num_classes=len(classes), feature_dim=meta["feature_dim"],
        num_snippets=num_snippets, batch_size=batch_size, shuffle_buffer=shuffle_buffer, seed=seed,
        skip_batches=done_epochs * steps_per_epoch, cache=cache_features,
    )
    if done_epochs >= steps // steps_per_epoch:
        raise StpnError(f"{backup_dir}: the interrupted run finished {done_epochs} epochs, but this run has only "
                        f"{steps // steps_per_epoch} (steps or steps_per_epoch changed?); resume with the same "
                        "settings, or delete the backup directory to start over")
    if done_epochs:
        logging.info("resuming the %s stream after epoch %d from %s", stream, done_epochs, backup_dir)
    # Keras refuses XLA when op determinism is already on (some XLA GPU kernels are non-deterministic), so
    # compile first and switch determinism on afterwards. The train step here (dense layers, reductions)
    # runs deterministically under XLA on CPU; tests/test_train.py checks two runs give identical weights.
    determinism_was_on = tf_config.is_op_determinism_enabled()
    _set_op_determinism(False)
    with dist.scope():
        model = STPN(len(classes), attention_units=attention_units, pooling=pooling, variant=variant, beta=beta)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
        # BackupAndRestore needs built variables before fit() (it restores into them).
        input_dim = meta["feature_dim"] * (2 if stream == "joint" else 1)
        model({"features": tf.zeros([1, num_snippets, input_dim]), "mask": tf.ones([1, num_snippets])})
    epochs = steps // steps_per_epoch
    callbacks = [
        # double_checkpoint: a kill while the backup is being written falls back to the previous one.
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
        keras.callbacks.TensorBoard(os.path.join(stream_dir, "logs"), update_freq="epoch"),
        keras.callbacks.ModelCheckpoint(
            os.path.join(stream_dir, "checkpoints", "epoch-{epoch:04d}.weights.h5"), save_weights_only=True
        ),
    ]
    logging.info("training %s stream: %d steps (%d epochs of %d), batch %d, %d classes, D=%d",
                 stream, steps, epochs, steps_per_epoch, batch_size, len(classes), meta["feature_dim"])
    _set_op_determinism(deterministic)
    try:
        with tfrecord.corrupt_record_errors(shards):
            history = model.fit(
                dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                shuffle=False,  # the dataset shuffles itself
            )
    finally:
        _set_op_determinism(determinism_was_on)
    save_model_atomically(model, final_path)
    logs = {k: float(v[-1]) for k, v in history.history.items()} if history.history else {}
    logging.info("saved %s (%s)", final_path, ", ".join(f"{k}={v:.4f}" for k, v in logs.items()))
    return logs


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

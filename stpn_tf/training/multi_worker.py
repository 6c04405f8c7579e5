"""The training loop under MultiWorkerMirroredStrategy, where Keras 3's `model.fit` does not run."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from stpn_tf.training import keras_compat


def train_loop(model: keras.Model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset, *, epochs: int,
               steps_per_epoch: int, callbacks: list[keras.callbacks.Callback], verbose: int = 0
               ) -> keras.callbacks.History:
    """`model.fit` for strategies Keras 3's fit does not run under (MultiWorkerMirroredStrategy, Keras issue
    20585): the model's own `train_step` under `strategy.run` over the distributed dataset, with the same
    callbacks (backup and restore, checkpoints, logs, stop at a step) called at the same points as fit.

    `dataset` yields global batches; each worker reads all of it and keeps its replicas' slices of every
    batch (auto-shard policy DATA), so the workers together see the batch sequence of one process with the
    same global batch, and a resumed run skips batches the same way. The logs are the replicas' mean.

    Args:
      model: A compiled, built model (optimizer variables built too: the restore runs outside the scope).
      strategy: The strategy `model` was built under.
      dataset: Global batches `({"features": [B, T, D], "mask": [B, T]}, labels [B, C])`, repeated.
      epochs: Epochs in all, counting those a restored backup already finished.
      steps_per_epoch: Steps per epoch.
      callbacks: As for `fit`; a BackupAndRestore among them sets the epoch to start at.
      verbose: 1 shows Keras's progress bar, 0 nothing.

    Returns:
      The History of the epochs run, as `fit` returns it.
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
    keras_compat.clear_resume_epoch(model)  # BackupAndRestore's restore in on_train_begin sets it
    callback_list.on_train_begin()
    logs: dict[str, Any] = {}
    for epoch in range(keras_compat.resume_epoch(model), epochs):
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

"""The `tf.distribute` strategy a training runs under, and this process's place in a TF_CONFIG cluster."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from stpn_tf.core.errors import StpnError

STRATEGIES = ("default", "mirrored", "multi_worker", "one_device:<device>")
_STRATEGY_ERROR = "expected 'default', 'mirrored', 'multi_worker' or 'one_device:<device>'"

_MULTI_WORKER: tf.distribute.MultiWorkerMirroredStrategy | None = None


def check_strategy(name: str) -> None:
    """Raises StpnError unless `name` is one of STRATEGIES (any device after "one_device:")."""
    if name not in ("default", "mirrored", "multi_worker") and not name.startswith("one_device:"):
        raise StpnError(f"unknown strategy {name!r}; {_STRATEGY_ERROR}")


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
                                f"({first_line(error)}); the strategy must be created before TensorFlow runs "
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


def is_chief(name: str) -> bool:
    """Whether this process writes the work directory: always, except a non-chief task under multi_worker."""
    return cluster_task()[2] if name == "multi_worker" else True


def first_line(error: BaseException) -> str:
    """The first line of an error's message (TF's messages run to many lines), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""The training work directory: what `stpn train` / `stpn demo` write and every later command reads.

    <workdir>/workdir.json                 WorkDirRecord: dataset directory (relative when inside), classes, feature size, the
                                           resolved config of the last training run (so `stpn localize`
                                           and `stpn export` need no other flag)
    <workdir>/classes.json                 class names, in the models' output order
    <workdir>/config.<command>[.<stream>].json   resolved config of each run
    <workdir>/<stream>/model.keras         the trained model of a stream (rgb, flow or joint)
    <workdir>/<stream>/checkpoints/        the last few per-epoch weights
    <workdir>/<stream>/backup/             BackupAndRestore state while training runs (resume after a kill)
    <workdir>/<stream>/logs/               TensorBoard
    <workdir>/detections.json, raw_test.npz, results.{txt,json}   outputs of localize / demo
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_write_json

RECORD_FILE = "workdir.json"
CLASSES_FILE = "classes.json"
MODEL_FILE = "model.keras"
DETECTIONS_FILE = "detections.json"
STREAMS = ("rgb", "flow")
# Optional extra of spec section 2: one model on the concatenated features [rgb, flow] (D = 2 x 1024).
JOINT = "joint"
MODEL_STREAMS = STREAMS + (JOINT,)
# The config sections that describe trained models: a rerun that changes them cannot reuse the models.
TRAINING_SECTIONS = ("model", "train")


@dataclasses.dataclass
class WorkDirRecord:
    """What `workdir.json` holds.

    Attributes:
      dataset_dir: Path of the dataset the streams were trained on (absolute once read; `workdir.json`
        holds it relative to the work directory when it lies inside, so the directory can be moved).
      classes: Class names.
      feature_dim: D per stream of that dataset.
      config: The resolved config of the last run, as a JSON-able dict.
      config_name: The config it was made from (a packaged name or a file path).
    """

    dataset_dir: str
    classes: list[str]
    feature_dim: int
    config: dict[str, Any]
    config_name: str


def _flat(section: Any, prefix: str) -> dict[str, Any]:
    """{"<prefix>.<key>[.<key>...]": value} of a nested config section."""
    if not isinstance(section, Mapping):
        return {prefix: section}
    out: dict[str, Any] = {}
    for key, value in section.items():
        out.update(_flat(value, f"{prefix}.{key}"))
    return out


def _map_dataset_dir(config: dict[str, Any], convert) -> dict[str, Any]:
    """A copy of a resolved config with `convert` applied to its dataset.dir (when it has one)."""
    dataset = config.get("dataset") if isinstance(config, dict) else None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("dir"), str):
        return config
    return {**config, "dataset": {**dataset, "dir": convert(dataset["dir"])}}


def check_stream(stream: str) -> str:
    if stream not in MODEL_STREAMS:
        raise StpnError(f"unknown stream {stream!r}; expected one of {', '.join(MODEL_STREAMS)}")
    return stream


class WorkDir:
    """Paths and records of one training work directory."""

    def __init__(self, path: str):
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def record_path(self) -> str:
        return self.file(RECORD_FILE)

    @property
    def classes_path(self) -> str:
        return self.file(CLASSES_FILE)

    @property
    def detections_path(self) -> str:
        """Where `stpn localize --workdir` writes by default and `stpn evaluate --workdir` reads."""
        return self.file(DETECTIONS_FILE)

    def stream_dir(self, stream: str) -> str:
        return os.path.join(self.path, check_stream(stream))

    def model_path(self, stream: str) -> str:
        return os.path.join(self.stream_dir(stream), MODEL_FILE)

    def checkpoints_dir(self, stream: str) -> str:
        return os.path.join(self.stream_dir(stream), "checkpoints")

    def backup_dir(self, stream: str) -> str:
        return os.path.join(self.stream_dir(stream), "backup")

    def logs_dir(self, stream: str) -> str:
        return os.path.join(self.stream_dir(stream), "logs")

    def config_path(self, command: str, stream: str | None = None) -> str:
        return self.file(f"config.{command}{'.' + stream if stream else ''}.json")

    def is_trained(self, stream: str) -> bool:
        return os.path.exists(self.model_path(stream))

    def trained_streams(self) -> list[str]:
        return [s for s in MODEL_STREAMS if self.is_trained(s)]

    def is_workdir(self) -> bool:
        """True for a directory that training wrote into (it has classes.json)."""
        return os.path.isfile(self.classes_path)

    def require(self) -> "WorkDir":
        """Raises a one-line error unless this is a training work directory."""
        if not os.path.isdir(self.path):
            raise StpnError(f"{self.path}: no such work directory")
        if not self.is_workdir():
            raise StpnError(f"{self.classes_path}: missing (not a training work directory; train a stream "
                            "into it with `stpn train` first)")
        return self

    # ---- records ------------------------------------------------------------------------------------

    def classes(self) -> list[str]:
        """Class names written by training."""
        path = self.classes_path
        try:
            with open(path) as handle:
                classes = json.load(handle)
        except FileNotFoundError:
            raise StpnError(f"{path}: missing (not a training work directory?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise StpnError(f"{path}: malformed JSON ({error})") from None
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise StpnError(f"{path}: expected a JSON list of class names")
        return classes

    def write_classes(self, classes: list[str]) -> None:
        os.makedirs(self.path, exist_ok=True)
        atomic_write_json(self.classes_path, list(classes), indent=None)

    def write_record(self, record: WorkDirRecord) -> None:
        """Writes `workdir.json`; paths inside the work directory (its dataset, the config's dataset.dir) are
        kept relative to it, so a moved or copied work directory still finds them."""
        os.makedirs(self.path, exist_ok=True)
        data = dataclasses.asdict(record)
        data["dataset_dir"] = self._relative(record.dataset_dir)
        data["config"] = _map_dataset_dir(record.config, self._relative)
        atomic_write_json(self.record_path, data)

    def _relative(self, path: str) -> str:
        """`path` relative to the work directory when it lies inside it (then starting "./"), else as given."""
        if not path or "://" in path:
            return path
        inside = os.path.relpath(os.path.abspath(path), os.path.abspath(self.path))
        return path if inside == ".." or inside.startswith(".." + os.sep) else os.path.join(".", inside)

    def _absolute(self, path: str) -> str:
        """A recorded path: relative ones (written by `_relative`) are inside the work directory; absolute
        ones (records written before relative paths, datasets elsewhere) are taken as they are."""
        if not path or "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(os.path.abspath(self.path), path))

    def read_record(self) -> WorkDirRecord | None:
        """The record, or None for a work directory written before records existed."""
        path = self.record_path
        if not os.path.exists(path):
            return None
        try:
            with open(path) as handle:
                data = json.load(handle)
            return WorkDirRecord(dataset_dir=self._absolute(str(data["dataset_dir"])), classes=list(data["classes"]),
                                 feature_dim=int(data["feature_dim"]),
                                 config=_map_dataset_dir(dict(data["config"]), self._absolute),
                                 config_name=str(data.get("config_name", "")))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
            raise StpnError(f"{path}: malformed work directory record ({type(error).__name__}: {error})") from None

    def check_training_settings(self, config: Mapping[str, Any] | None) -> None:
        """Refuses a rerun whose training settings (TRAINING_SECTIONS of the resolved `config`) differ from
        those the models here were trained with; localization and evaluation settings may change. The models
        and the config recorded beside them stay one description. Unrecorded configs are not checked.

        Raises:
          StpnError: Naming the first differing setting (config.<section>.<key>), both values, the remedy.
        """
        record = self.read_record() if self.trained_streams() else None
        if record is None or not record.config or config is None:
            return
        asked = json.loads(json.dumps(dict(config)))  # JSON values (tuples become lists), as the record holds
        for section in TRAINING_SECTIONS:
            old = _flat(record.config.get(section, {}), f"config.{section}")
            new = _flat(asked.get(section, {}), f"config.{section}")
            for key in sorted(set(old) & set(new)):
                if old[key] != new[key]:
                    raise StpnError(f"{self.record_path}: the models in {self.path} were trained with "
                                    f"{key}={old[key]}, this run asks for {key}={new[key]}; training settings cannot "
                                    "change on a rerun: use a new --workdir (localization and evaluation settings "
                                    "may change)")

    def write_config(self, command: str, config: dict[str, Any], stream: str | None = None) -> None:
        """Keeps the resolved config of a run (`config.<command>[.<stream>].json`; a dataset.dir inside the
        work directory relative to it)."""
        os.makedirs(self.path, exist_ok=True)
        atomic_write_json(self.config_path(command, stream), _map_dataset_dir(config, self._relative), indent=2)

    @contextlib.contextmanager
    def lock(self, stream: str) -> Iterator[None]:
        """Holds `<workdir>/<stream>/.lock` while a run trains `stream`; a second run is refused.

        The lock is an exclusive `flock`: the kernel releases it when the holder exits or is killed, so a
        crashed run never leaves the stream locked.
        """
        os.makedirs(self.stream_dir(stream), exist_ok=True)
        path = os.path.join(self.stream_dir(stream), ".lock")
        handle = open(path, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise StpnError(f"{self.path}: the {stream} stream is being trained by {holder}; wait for it to "
                                "finish (or stop it), then rerun") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}")
            handle.flush()
            yield
        finally:
            handle.close()

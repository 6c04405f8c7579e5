"""The export directory written by `stpn export`: a SavedModel plus a description of what it holds.

    <export>/saved_model.pb, variables/       the SavedModel (signatures: stpn_tf.inference.module)
    <export>/assets/classes.txt              class names, one per line (for any TensorFlow client)
    <export>/assets/stpn_export.json         ExportInfo: classes, feature size, streams, grid, localization
                                             settings, and the work directory it came from
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_write_json, atomic_write_text

INFO_FILE = os.path.join("assets", "stpn_export.json")
CLASSES_ASSET = "classes.txt"


@dataclasses.dataclass
class ExportInfo:
    """What `assets/stpn_export.json` records.

    Attributes:
      classes: Class names (also the `class_names` output of every signature).
      feature_dim: D per stream that `serving_default` takes.
      streams: Model streams inside, e.g. ["rgb", "flow"].
      grid_length: Positions sampled per video, or None when it localizes every real snippet.
      localize: The localizer's settings (stpn_tf.localize.LocalizerConfig fields).
      source: Work directory the models came from.
    """

    classes: list[str]
    feature_dim: int
    streams: list[str]
    grid_length: int | None
    localize: dict[str, Any]
    source: str = ""


def is_export_dir(path: str) -> bool:
    """True for a SavedModel directory (it holds saved_model.pb)."""
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def write_classes_asset(directory: str, classes: list[str]) -> str:
    """Writes the class names asset into `directory`; returns its path."""
    path = os.path.join(directory, CLASSES_ASSET)
    atomic_write_text(path, "".join(name + "\n" for name in classes), make_parents=True)
    return path


def write_export_info(saved_model_dir: str, info: ExportInfo) -> None:
    atomic_write_json(os.path.join(saved_model_dir, INFO_FILE), dataclasses.asdict(info), make_parents=True)


def read_export_info(path: str) -> ExportInfo:
    """The description of an `stpn export` directory (one-line errors for anything else)."""
    if not is_export_dir(path):
        if not os.path.isdir(path):
            raise StpnError(f"{path}: no such export directory")
        raise StpnError(f"{path}: not an export directory (no saved_model.pb)")
    info_path = os.path.join(path, INFO_FILE)
    try:
        with open(info_path) as handle:
            data = json.load(handle)
        return ExportInfo(classes=list(data["classes"]), feature_dim=int(data["feature_dim"]),
                          streams=list(data.get("streams", ["rgb", "flow"])), grid_length=data.get("grid_length"),
                          localize=dict(data.get("localize", {})), source=str(data.get("source", "")))
    except FileNotFoundError:
        raise StpnError(f"{info_path}: missing; {path} is a SavedModel but not an `stpn export`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise StpnError(f"{info_path}: malformed export description ({type(error).__name__}: {error})") from None


def load_saved_model(path: str):
    """`tf.saved_model.load(path)` with a one-line error for a damaged SavedModel."""
    import tensorflow as tf

    try:
        return tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001 - TF raises many types for a damaged SavedModel
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StpnError(f"{path}: cannot load the SavedModel ({type(error).__name__}: {first})") from None

"""The shipped configs (ml_collections files returning a ConfigDict), found by name or by path.

Names: `thumos14` (the paper's THUMOS14 protocol), `demo` (the embedded dataset, small and fast),
`activitynet13` (ActivityNet 1.3). `--config=NAME` picks one of these, `--config=FILE` a config file of
your own (it can start from `stpn_tf.configs.thumos14.get_config()`). Every config has the keys of
`thumos14`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from stpn_tf.core.errors import StpnError

NAMES = ("thumos14", "demo", "activitynet13")


def _from_module(module, where: str) -> ml_collections.ConfigDict:
    if not hasattr(module, "get_config"):
        raise StpnError(f"{where}: a config file must define get_config()")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise StpnError(f"{where}: get_config() must return an ml_collections.ConfigDict, got "
                        f"{type(config).__name__}")
    return config


def load_config(name_or_path: str) -> ml_collections.ConfigDict:
    """The config a `--config` value names: a shipped name (see NAMES) or a .py file."""
    if name_or_path in NAMES:
        return _from_module(importlib.import_module(f"{__name__}.{name_or_path}"), name_or_path)
    path = name_or_path
    if not os.path.isfile(path):
        hint = f"; shipped configs: {', '.join(NAMES)}" if os.sep not in path and not path.endswith(".py") else ""
        raise StpnError(f"{path}: config file not found{hint}")
    spec = importlib.util.spec_from_file_location(f"stpn_user_config_{abs(hash(os.path.abspath(path)))}", path)
    if spec is None or spec.loader is None:
        raise StpnError(f"{path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - a user's file can fail in any way; report it on one line
        raise StpnError(f"{path}: the config file failed to load ({type(error).__name__}: {error})") from None
    return _from_module(module, path)


def restore_config(values: Mapping[str, Any], name: str) -> ml_collections.ConfigDict:
    """A config recorded as JSON (a work directory's record) back as a typed ConfigDict.

    The structure and types come from the config it was made from (`name`, or thumos14 when that file is
    gone); recorded values replace the defaults key by key, so tuples stay tuples and floats floats. Keys
    the structure does not have are dropped.
    """
    try:
        base = load_config(name) if name else load_config("thumos14")
    except StpnError:
        base = load_config("thumos14")

    def overlay(target: ml_collections.ConfigDict, recorded: Mapping[str, Any]) -> None:
        for key, value in recorded.items():
            if key not in target:
                continue
            if isinstance(target[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
                overlay(target[key], value)
            elif not isinstance(target[key], ml_collections.ConfigDict):
                try:
                    target[key] = value
                except (TypeError, ValueError):
                    pass  # a value of another type than the structure's: keep the default

    overlay(base, values)
    return base


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """{"section.key": value} of every leaf."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

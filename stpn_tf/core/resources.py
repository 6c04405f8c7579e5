"""Files shipped with the package (the repository's data/ folder, package `stpn_tf.shipped`), found with
`importlib.resources`.

On the command line any file or folder flag accepts `stpn:<path inside data/>`, e.g.
`--ground_truth=stpn:thumos14/th14_evalkit_groundtruth`, so the shipped copies are usable from any
directory, also from an installed wheel.
"""

from __future__ import annotations

import importlib.resources
import os

from stpn_tf.core.errors import StpnError

PACKAGE = "stpn_tf.shipped"  # the repository's data/ folder, installed as package data
PREFIX = "stpn:"
THUMOS14 = "thumos14"
THUMOS14_TOOLKIT = "thumos14/th14_evalkit_groundtruth"
THUMOS14_REDUCED = "thumos14/thumos14reduced"
THUMOS14_BASNET = "thumos14/basnet"
THUMOS14_DET_TXT = "thumos14/th14_evalkit_groundtruth/det.txt"


def resource_path(relative: str) -> str:
    """File system path of a shipped file or folder, e.g. `resource_path("thumos14/basnet/gt.json")`."""
    path = str(importlib.resources.files(PACKAGE).joinpath(relative))
    if not os.path.exists(path):
        raise StpnError(f"{PREFIX}{relative}: no such file shipped with stpn_tf (shipped: "
                        f"{', '.join(PREFIX + name for name in shipped())})")
    return path


def shipped() -> list[str]:
    """The shipped folders one level below each top folder (what `stpn:` can name)."""
    root = importlib.resources.files(PACKAGE)
    names = []
    for top in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        names += [f"{top}/{p.name}" for p in sorted(root.joinpath(top).iterdir(), key=lambda p: p.name)
                  if p.is_dir()]
    return names


def resolve(value: str | None) -> str | None:
    """`stpn:<relative>` -> the shipped path; anything else is returned unchanged."""
    if value is not None and value.startswith(PREFIX):
        return resource_path(value[len(PREFIX):].strip("/"))
    return value

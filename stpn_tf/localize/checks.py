"""Checks of the Localizer's inputs, for numpy arrays and tensors alike (one-line StpnErrors).

The eager Localizer checks numpy arrays before its first pass; the graph (`graph.localize`) checks the
static shapes of its tensors when it is traced, and the lengths too when it runs eagerly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stpn_tf.core.errors import StpnError

STREAM_KEYS = ("attention", "tcam", "probabilities")


def check_keys(name: str, stream: Mapping) -> None:
    """Raises unless `stream` has every STREAM_KEYS entry."""
    missing = [key for key in STREAM_KEYS if key not in stream]
    if missing:
        raise StpnError(f"localize: stream {name!r} lacks {missing}")


def _shape(x) -> tuple | None:
    """The shape of an array or tensor (None for a size unknown at trace time), None for an unknown rank."""
    shape = x.shape
    rank = shape.rank if hasattr(shape, "rank") else len(shape)
    return None if rank is None else tuple(shape)


def check_shapes(rgb: Mapping, flow: Mapping) -> None:
    """Raises unless both streams hold attention [B, T], tcam [B, T, C], probabilities [B, C] of one B, T, C
    (sizes unknown at trace time pass) with C known."""
    for name, stream in (("rgb", rgb), ("flow", flow)):
        shapes = [_shape(stream[key]) for key in STREAM_KEYS]
        ranks = [None if shape is None else len(shape) for shape in shapes]
        if ranks != [2, 3, 2]:
            raise StpnError(f"localize: stream {name!r} needs attention [B, T], tcam [B, T, C], "
                            f"probabilities [B, C]; got ranks {ranks}")
    shapes = [_shape(s[key]) for s in (rgb, flow) for key in STREAM_KEYS]
    attention_r, tcam_r, prob_r, attention_f, tcam_f, prob_f = shapes

    def compatible(a, b):
        return a is None or b is None or a == b

    pairs = [(attention_r, tcam_r[:2]), (prob_r, (tcam_r[0], tcam_r[2])), (tcam_r, tcam_f),
             (attention_r, attention_f), (prob_r, prob_f)]
    for a, b in pairs:
        if len(a) != len(b) or not all(compatible(x, y) for x, y in zip(a, b)):
            raise StpnError(f"localize: inconsistent stream shapes {shapes}")
    if tcam_r[2] is None:
        raise StpnError("localize: the number of classes (last tcam dimension) must be static")


def check_lengths(lengths: np.ndarray, positions: int, *, caller: str) -> None:
    """Raises unless every valid length lies in [0, positions] (the graph clips them instead).

    Args:
      lengths: int [B] valid grid positions per video.
      positions: T, the time axis of the streams.
      caller: The error's prefix ("localize" or "Localizer").
    """
    lengths = np.asarray(lengths)
    if np.any(lengths > positions) or np.any(lengths < 0):
        raise StpnError(f"{caller}: lengths must lie in [0, {positions}], got {lengths}")

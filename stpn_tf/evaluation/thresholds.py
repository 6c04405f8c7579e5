"""tIoU thresholds: the protocols' defaults, the `--tiou_thresholds` flag, and the averaged ranges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stpn_tf.artifacts.annotations import VideoRecord
from stpn_tf.core.errors import StpnError
from stpn_tf.evaluation.matching import as_float
from stpn_tf.evaluation.th14kit import matlab_colon

THUMOS_TIOU = np.linspace(0.1, 0.9, 9)
ACTIVITYNET_TIOU = np.linspace(0.5, 0.95, 10)
# Ground truth with more classes than THUMOS14's 20 gets ActivityNet's thresholds by default.
THUMOS_MAX_CLASSES = 20
# Ranges whose mean mAP tables report when the thresholds cover them end to end.
AVERAGE_RANGES = ((0.1, 0.5), (0.1, 0.7), (0.1, 0.9), (0.5, 0.95))


def default_tiou_thresholds(records: Sequence[VideoRecord], protocol: str) -> np.ndarray:
    """THUMOS-style 0.1..0.9 unless the ground truth has more than 20 classes (then 0.5..0.95).

    For "th14kit" the THUMOS-style values are Matlab's 0.1:0.1:0.9 floats.
    """
    num_classes = len({s.label for r in records for s in r.segments})
    if num_classes > THUMOS_MAX_CLASSES:
        return ACTIVITYNET_TIOU.copy()
    return matlab_colon(0.1, 0.1, 0.9) if protocol == "th14kit" else THUMOS_TIOU.copy()


def check_thresholds(tiou_thresholds) -> np.ndarray:
    """The thresholds as a float64 array; a StpnError unless a non-empty list of numbers in [0, 1]."""
    thr = as_float(tiou_thresholds).reshape(-1)
    if thr.size == 0 or not np.all(np.isfinite(thr)) or np.any((thr < 0) | (thr > 1)):
        raise StpnError(f"tIoU thresholds must be a non-empty list of numbers in [0, 1], got {list(thr)}")
    return thr


def parse_tiou_thresholds(spec: str | Sequence[float] | None) -> list[float] | None:
    """Parses the `--tiou_thresholds` flag.

    Args:
      spec: None or "" (protocol defaults), "thumos" (numpy.linspace(0.1, 0.9, 9)), "activitynet"
        (numpy.linspace(0.5, 0.95, 10)), a comma-separated list "0.1,0.3,0.5", or a list of numbers.

    Returns:
      The thresholds, or None for the defaults.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, str):
        named = {"thumos": THUMOS_TIOU, "activitynet": ACTIVITYNET_TIOU}
        if spec.strip().lower() in named:
            return named[spec.strip().lower()].tolist()
        try:
            values = [float(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise StpnError(
                f"--tiou_thresholds: expected 'thumos', 'activitynet' or numbers like '0.1,0.5', got {spec!r}"
            ) from None
    else:
        values = [float(x) for x in spec]
    return check_thresholds(values).tolist()


def range_averages(thr: np.ndarray, m_ap: np.ndarray) -> dict[str, float]:
    """{"lo:hi": mean mAP} for each of AVERAGE_RANGES the thresholds cover end to end."""
    out = {}
    for lo, hi in AVERAGE_RANGES:
        inside = (thr >= lo - 1e-9) & (thr <= hi + 1e-9)
        if inside.any() and abs(thr[inside].min() - lo) < 1e-9 and abs(thr[inside].max() - hi) < 1e-9:
            out[f"{lo:g}:{hi:g}"] = float(m_ap[inside].mean())
    return out

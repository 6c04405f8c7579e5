"""Post-processing of the streams' outputs into detections.

config (LocalizerConfig, the settings and their codec) -> checks (input checks) -> ops, nms (the tensor
ops) -> graph (the configured graph, `localize`) -> bounds (numpy bounds derived from the data), serving
(the same bounds as graph ops, inside a SavedModel) -> localizer (the Localizer module, the one postprocessor). Beside them, independent of the compiled code:
reference (the numpy statement of the algorithm), numpy_engine (the same vectorized, what `stpn localize --raw`
runs) and timeline (the unit conversions).

The package's names load on first use, so that the numpy modules (config, reference, numpy_engine, timeline)
import without TensorFlow (`stpn localize --raw` runs on them alone).
"""

import importlib

_NAMES = {"Localizer": "stpn_tf.localize.localizer", "LocalizerConfig": "stpn_tf.localize.config",
          "localize": "stpn_tf.localize.graph"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

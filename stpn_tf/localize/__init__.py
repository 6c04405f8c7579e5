"""Post-processing of the streams' outputs into detections.

config (LocalizerConfig, the settings and their codec) -> checks (input checks) -> ops, nms (the tensor
ops) -> graph (the configured graph, `localize`) -> bounds (numpy bounds derived from the data), serving
(the same bounds as graph ops, inside a SavedModel) -> localizer (the Localizer module, the one postprocessor). Beside them, independent of the compiled code:
reference (the numpy statement of the algorithm) and timeline (the unit conversions).
"""

from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.localize.graph import localize
from stpn_tf.localize.localizer import Localizer

__all__ = ["Localizer", "LocalizerConfig", "localize"]

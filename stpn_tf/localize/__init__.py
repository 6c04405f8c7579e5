"""Post-processing of the streams' outputs into detections: the Localizer (the one postprocessor), its
numpy reference, and the unit conversions of the timeline."""

from stpn_tf.localize.localizer import Localizer, LocalizerConfig, localize

__all__ = ["Localizer", "LocalizerConfig", "localize"]

"""Temporal action detection mAP with both official protocols (spec section 4): matching data, the
ActivityNet and THUMOS14-toolkit protocols, thresholds, prediction file formats, reports and sweeps."""

from stpn_tf.evaluation.evaluate import PROTOCOLS, evaluate_detections, protocols_of, run_evaluate

__all__ = ["PROTOCOLS", "evaluate_detections", "protocols_of", "run_evaluate"]

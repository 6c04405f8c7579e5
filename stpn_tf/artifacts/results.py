"""Detection results in the ActivityNet layout (spec section 5), the one format detections are written in.

    {"version": "VERSION 1.3",
     "results": {video_id: [{"label": str, "score": float, "segment": [start_s, end_s]}, ...]},
     "external_data": {"used": bool, "details": str}}

`detections_from_padded` turns the localizer's fixed-size outputs (`num_detections` valid slots per video)
into these lists; `results_envelope` wraps them; `write_results` / `read_results` are the file side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_write_text

RESULTS_VERSION = "VERSION 1.3"
EXTERNAL_DATA = {"used": True, "details": "I3D features pretrained on Kinetics"}


def detections_from_padded(outputs: Mapping[str, Any], classes: Sequence[str], index: int) -> list[dict[str, Any]]:
    """The ActivityNet detection list of video `index` of a padded localizer output.

    Args:
      outputs: "detection_classes" [B, K], "detection_scores" [B, K], "detection_segments" [B, K, 2] (seconds)
        and "num_detections" [B], as numpy arrays.
      classes: Class names, indexed by "detection_classes".
      index: Video position b in the batch.
    """
    count = int(outputs["num_detections"][index])
    labels, scores = outputs["detection_classes"][index], outputs["detection_scores"][index]
    segments = outputs["detection_segments"][index]
    return [{"label": classes[int(labels[j])], "score": float(scores[j]),
             "segment": [float(segments[j, 0]), float(segments[j, 1])]} for j in range(count)]


def results_from_padded(video_ids: Sequence[str], classes: Sequence[str],
                        outputs: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """{video_id: detections} for every video of a padded localizer output."""
    return {str(video_id): detections_from_padded(outputs, classes, i) for i, video_id in enumerate(video_ids)}


def results_envelope(results: Mapping[str, Sequence[Mapping[str, Any]]], *, sort: bool = False,
                     external_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The results file object around {video_id: detections}."""
    body = dict(sorted(results.items())) if sort else dict(results)
    return {"version": RESULTS_VERSION, "results": body, "external_data": dict(external_data or EXTERNAL_DATA)}


def results_body(predictions: Mapping[str, Any], source: str = "predictions") -> Mapping[str, Any]:
    """{video_id: detections} of a results object (or of a bare mapping, returned as is)."""
    if "results" in predictions:
        body = predictions["results"]
        if not isinstance(body, Mapping):
            raise StpnError(f"{source}: 'results' must be an object {{video_id: [detections]}}")
        return body
    return predictions


def write_results(path: str, results: Mapping[str, Any]) -> None:
    """Writes a results object (see `results_envelope`) atomically, creating the directory."""
    atomic_write_text(path, json.dumps(results), make_parents=True)


def parse_results(text: str, path: str) -> dict[str, Any]:
    """A results object from JSON text; errors name `path`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise StpnError(f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    if not isinstance(data, dict) or "results" not in data:
        raise StpnError(f"{path}: missing 'results' object (expected ActivityNet results layout)")
    if not isinstance(data["results"], dict):
        raise StpnError(f"{path}: 'results' must be an object {{video_id: [detections]}}")
    return data


def read_results(path: str) -> dict[str, Any]:
    """Reads an ActivityNet-layout results JSON file."""
    from stpn_tf.artifacts.annotations import read_text

    return parse_results(read_text(path), path)


def as_numpy(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Tensor outputs (e.g. of a signature call) as numpy arrays."""
    return {key: np.asarray(value) for key, value in outputs.items()}

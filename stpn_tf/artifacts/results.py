"""Detection results in the ActivityNet layout (spec section 5), the one format detections are written in.

    {"version": "VERSION 1.3",
     "results": {video_id: [{"label": str, "score": float, "segment": [start_s, end_s]}, ...]},
     "external_data": {"used": bool, "details": str}}

`detections_from_padded` turns the localizer's fixed-size outputs (`num_detections` valid slots per video)
into these lists; `results_envelope` wraps them; `write_results` / `read_results` are the file side, and
`ResultsWriter` writes the same bytes video by video (memory flat in the number of videos).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_output, atomic_write_text

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


class ResultsWriter:
    """Writes a results file as detections come, atomically: the bytes of `write_results(path,
    results_envelope(all of them))`.

    Usage:
      with ResultsWriter(path) as writer:
        for batch in ...:
          writer.add({video_id: detections, ...})
      writer.num_videos

    Each video's detections are written when added and not kept (only the ids are, to refuse a video
    added twice). The file goes to a hidden temporary name, renamed onto `path` when the block ends
    without an error; on an error it is removed and an older `path` stays as it was.
    """

    def __init__(self, path: str, *, external_data: Mapping[str, Any] | None = None):
        self.path = path
        self._external = dict(external_data or EXTERNAL_DATA)
        self._ids: set[str] = set()
        self._stack: contextlib.ExitStack | None = None
        self._handle = None

    @property
    def num_videos(self) -> int:
        return len(self._ids)

    def __enter__(self) -> "ResultsWriter":
        with contextlib.ExitStack() as stack:  # undoes the opening if it fails
            temporary = stack.enter_context(atomic_output(self.path, make_parents=True))
            if "://" in self.path:
                import tensorflow as tf  # gfile: outputs may live on gs://

                handle = stack.enter_context(tf.io.gfile.GFile(temporary, "w"))
            else:
                handle = stack.enter_context(open(temporary, "w", encoding="utf-8"))
            # What json.dumps makes of results_envelope: these keys in this order, ", " and ": " separators.
            handle.write(f'{{"version": {json.dumps(RESULTS_VERSION)}, "results": {{')
            self._handle, self._stack = handle, stack.pop_all()
        return self

    def add(self, results: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Appends {video_id: detections}; StpnError naming the file for a video already written."""
        if self._handle is None:
            raise RuntimeError("ResultsWriter.add called outside its `with` block")
        for video_id, detections in results.items():
            video_id = str(video_id)
            if video_id in self._ids:
                raise StpnError(f"{self.path}: video {video_id!r} comes twice (the dataset holds it twice); "
                                "nothing was written")
            separator = ", " if self._ids else ""
            self._ids.add(video_id)
            self._handle.write(f"{separator}{json.dumps(video_id)}: {json.dumps(list(detections))}")

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, handle = self._stack, self._handle
        self._stack = self._handle = None
        if exc_type is None:
            try:
                handle.write(f'}}, "external_data": {json.dumps(self._external)}}}')
            except BaseException:  # a full disk: the temporary goes, the error becomes one line
                if not stack.__exit__(*sys.exc_info()):
                    raise
                return False
        # Closes the file, then renames it onto the path, or removes it when the block failed.
        return bool(stack.__exit__(exc_type, exc, tb))


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

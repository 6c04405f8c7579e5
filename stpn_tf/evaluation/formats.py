"""Prediction files: ActivityNet results JSON and THUMOS14 toolkit result txt (read and written)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from stpn_tf.artifacts import annotations
from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_write_text
from stpn_tf.artifacts.results import parse_results, results_body, results_envelope
from stpn_tf.evaluation.matching import check_start

# Video file suffixes the kit strips from result file names (its copies use .mpeg or .mp4).
_VIDEO_SUFFIX = re.compile(r"\.(mpeg|mp4|avi)$", re.IGNORECASE)


def read_toolkit_results(path: str, ucf101_ids: Mapping[str, int], *, unknown_labels_as_fp: bool = False) -> dict:
    """Toolkit result txt (`video start end class_id confidence` lines) -> a results object.

    Class ids are UCF101 ids (`read_ucf101_ids(det.txt)`). Unknown ids raise StpnError unless
    `unknown_labels_as_fp` (then they become label "UCF101 id <n>"). Like the kit, which strips the
    video file suffix from result names before matching, a trailing `.mpeg`, `.mp4` or `.avi` (any case)
    is removed from the video name ("video_test_0000004.mpeg" -> "video_test_0000004").
    """
    names = {i: n for n, i in ucf101_ids.items()}
    results: dict[str, list] = {}
    for where, fields in annotations.text_rows(path, 5, "video start end class_id confidence"):
        s, e = annotations.parse_interval(fields[1], fields[2], where)
        check_start(s, e, f"{where} (video {fields[0]})")
        try:
            cid = int(fields[3])
            conf = float(fields[4])
        except ValueError:
            raise StpnError(
                f"{where}: class id must be an integer and confidence a number, got {' '.join(fields)!r}"
            ) from None
        if not math.isfinite(conf):
            raise StpnError(f"{where}: confidence is {fields[4]} (NaN and infinite scores are not allowed)")
        if cid not in names:
            if not unknown_labels_as_fp:
                raise StpnError(
                    f"{where}: class id {cid} is not in det.txt; "
                    "pass --unknown_labels_as_fp to count it as a false positive"
                )
            label = f"UCF101 id {cid}"
        else:
            label = names[cid]
        video = _VIDEO_SUFFIX.sub("", fields[0])
        results.setdefault(video, []).append({"label": label, "score": conf, "segment": [s, e]})
    return results_envelope(results, external_data={"used": False, "details": ""})


def write_toolkit_results(predictions: Mapping[str, Any], path: str, ucf101_ids: Mapping[str, int]) -> int:
    """Writes detections as toolkit result txt, atomically; returns the number of lines.

    Floats are written with repr (shortest exact round trip), so re-reading gives the same numbers.
    """
    lines = []
    for vid, dets in results_body(predictions, path).items():
        for j, det in enumerate(dets):
            label = det["label"]
            if label not in ucf101_ids:
                raise StpnError(f"{path}: video {vid!r}, detection {j}: label {label!r} has no UCF101 id in det.txt")
            s, e = det["segment"]
            lines.append(f"{vid} {float(s)!r} {float(e)!r} {ucf101_ids[label]} {float(det['score'])!r}\n")
    atomic_write_text(path, "".join(lines))
    return len(lines)


def load_predictions(path: str, *, det_txt: str | None = None, unknown_labels_as_fp: bool = False) -> dict:
    """Predictions from an ActivityNet results JSON or a toolkit result txt (needs det_txt)."""
    text = annotations.read_text(path)
    if text.lstrip().startswith("{") or path.endswith(".json"):
        return parse_results(text, path)
    if det_txt is None:
        raise StpnError(f"{path}: looks like a toolkit result txt; pass --det_txt (UCF101 ids) to read it")
    return read_toolkit_results(path, annotations.read_ucf101_ids(det_txt), unknown_labels_as_fp=unknown_labels_as_fp)

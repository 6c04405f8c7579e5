"""Evaluation results as text: the full table of one run, and the compact per-row tables of the demo."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PROTOCOL_TITLES = {
    "activitynet": "ActivityNet protocol (match tIoU >= t, all-point AP)",
    "th14kit": "THUMOS14 toolkit protocol (match overlap > t, Ambiguous ignored, 11-point AP)",
}
SHORT_TITLES = {"activitynet": "ActivityNet protocol", "th14kit": "THUMOS14 toolkit"}


def format_table(result: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Readable table(s): mAP per threshold, range averages, per-class AP (all in %)."""
    if not isinstance(result, Mapping):
        return "\n\n".join(format_table(r) for r in result)
    thr = result["tiou_thresholds"]
    width = max([len("mAP")] + [len(c) for c in result["per_class_ap"]]) + 2
    head = "tIoU".ljust(width) + "".join(f"{t:>7.2f}" for t in thr)
    lines = [
        PROTOCOL_TITLES.get(result["protocol"], result["protocol"]),
        f"{result['num_videos']} videos, {len(result['per_class_ap'])} classes, "
        f"{result['num_ground_truth']} ground truth segments, {result['num_predictions']} predictions",
        head,
        "mAP".ljust(width) + "".join(f"{100 * x:>7.2f}" for x in result["mAP"]),
    ]
    avgs = dict(result.get("average_mAP_ranges", {}))
    avgs.setdefault("all thresholds", result["average_mAP"])
    lines.append("average mAP: " + ", ".join(f"{k} = {100 * v:.2f}" for k, v in avgs.items()))
    lines.append("per-class AP:")
    lines.append(head)
    for c, aps in result["per_class_ap"].items():
        lines.append(c.ljust(width) + "".join(f"{100 * x:>7.2f}" for x in aps))
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def format_rows(title: str, thresholds: Sequence[float], rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """A compact mAP table (percent): one row per setting, the mean over the thresholds last."""
    head = f"{title:<24}" + "".join(f"{t:>6.2f}" for t in thresholds) + "    avg"
    lines = [head, "-" * len(head)]
    for name, result in rows:
        lines.append(f"{name:<24}" + "".join(f"{100 * m:>6.1f}" for m in result["mAP"])
                     + f"{100 * result['average_mAP']:>7.1f}")
    return "\n".join(lines)


def format_protocol_tables(tables: Mapping[str, Mapping[str, Mapping[str, Any]]], thresholds: Sequence[float]) -> str:
    """{protocol: {row: result}} as one compact table per protocol."""
    return "\n\n".join(format_rows(f"mAP (%) {SHORT_TITLES.get(p, p)}", thresholds, list(rows.items()))
                       for p, rows in tables.items())

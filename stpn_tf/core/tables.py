"""Evaluation results as text: every mAP table and line the commands print, and the protocols' titles.

One home for the layout of numbers (mAP in percent, thresholds with two decimals) so that `stpn evaluate`,
the demo, `stpn tune`, `stpn study`, `stpn localize --sweep` and bench/options.py print alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class Title(NamedTuple):
    """How a protocol is named: `short` in compact tables and figures, `full` above the full table."""

    short: str
    full: str


# The protocols in the order every table lists them (stpn_tf.evaluation: activitynet, th14kit).
PROTOCOL_TITLES = {
    "activitynet": Title("ActivityNet protocol", "ActivityNet protocol (match tIoU >= t, all-point AP)"),
    "th14kit": Title("THUMOS14 toolkit",
                     "THUMOS14 toolkit protocol (match overlap > t, Ambiguous ignored, 11-point AP)"),
}


def short_title(protocol: str) -> str:
    """The protocol's name in compact tables and figures (the protocol key itself when unknown)."""
    return PROTOCOL_TITLES[protocol].short if protocol in PROTOCOL_TITLES else protocol


def full_title(protocol: str) -> str:
    """The protocol's name with its matching rule and AP, above `format_table`'s table."""
    return PROTOCOL_TITLES[protocol].full if protocol in PROTOCOL_TITLES else protocol


def map_heading(protocol: str, suffix: str = "") -> str:
    """The first cell of a compact table: "mAP (%) <short title><suffix>"."""
    return f"mAP (%) {short_title(protocol)}{suffix}"


def format_table(result: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Readable table(s): mAP per threshold, range averages, per-class AP (all in %)."""
    if not isinstance(result, Mapping):
        return "\n\n".join(format_table(r) for r in result)
    thr = result["tiou_thresholds"]
    width = max([len("mAP")] + [len(c) for c in result["per_class_ap"]]) + 2
    head = "tIoU".ljust(width) + "".join(f"{t:>7.2f}" for t in thr)
    lines = [
        full_title(result["protocol"]),
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


def format_rows(title: str, thresholds: Sequence[float], rows: Sequence[tuple[str, Sequence[float], float]], *,
                width: int = 24, average_decimals: int = 1, rule: bool = True) -> str:
    """A compact mAP table (percent): a heading row of thresholds, then one row per setting, its mean last.

    Args:
      title: The first cell of the heading row.
      thresholds: T tIoU thresholds.
      rows: (name, mAP [T] as fractions, average mAP as a fraction) per row.
      width: Width of the first column (longer names and titles push the row right).
      average_decimals: Decimals of the average column (its width is 6 + this).
      rule: A line of dashes under the heading row.
    """
    average_width = 6 + average_decimals
    head = f"{title:<{width}}" + "".join(f"{t:>6.2f}" for t in thresholds) + "avg".rjust(average_width)
    lines = [head] + (["-" * len(head)] if rule else [])
    for name, m_ap, average in rows:
        lines.append(f"{name:<{width}}" + "".join(f"{100 * m:>6.1f}" for m in m_ap)
                     + f"{100 * average:>{average_width}.{average_decimals}f}")
    return "\n".join(lines)


def format_protocol_tables(tables: Mapping[str, Mapping[str, Mapping[str, Any]]], thresholds: Sequence[float]) -> str:
    """{protocol: {row: evaluation result}} as one compact table per protocol (the demo's tables)."""
    return "\n\n".join(format_rows(map_heading(p), thresholds,
                                   [(name, r["mAP"], r["average_mAP"]) for name, r in rows.items()])
                       for p, rows in tables.items())


def format_setting_tables(rows: Mapping[str, Mapping[str, Any]], label: str) -> str:
    """Scored settings ({name: {"protocols": {protocol: {"tiou_thresholds", "mAP", "average_mAP"}}}}) as one
    table per protocol, each followed by an empty line (`stpn tune`'s test table)."""
    lines = []
    for protocol in PROTOCOL_TITLES:
        thresholds = next(iter(rows.values()))["protocols"][protocol]["tiou_thresholds"]
        lines.append(format_rows(map_heading(protocol, f" {label}"), thresholds,
                                 [(name, row["protocols"][protocol]["mAP"], row["protocols"][protocol]["average_mAP"])
                                  for name, row in rows.items()], width=44, average_decimals=2, rule=False))
        lines.append("")
    return "\n".join(lines)


def format_study_tables(aggregate: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Seed statistics ({setting: {protocol: {"tiou_thresholds", "mAP": {stat: [T]}, "average_mAP": {stat}}}})
    as one table per protocol and setting, each after an empty line; the lines, for `stpn study`."""
    lines = []
    for protocol in PROTOCOL_TITLES:
        for name, by_protocol in aggregate.items():
            r = by_protocol[protocol]
            lines.append("")
            lines.append(format_rows(map_heading(protocol, f", {name}"), r["tiou_thresholds"],
                                     [(f"  {stat}", r["mAP"][stat], r["average_mAP"][stat])
                                      for stat in ("mean", "std", "min", "max")],
                                     width=48, average_decimals=2, rule=False))
    return lines


def sweep_heading() -> str:
    """The heading of `stpn localize --sweep`'s rows (`sweep_line`)."""
    return f"{'class_thr':>10}{'tcam_thr':>10}{'avg mAP':>10}{'mAP@0.5':>10}"


def sweep_line(class_threshold: float, tcam_threshold: float, average: float, at_half: float) -> str:
    """One row of `stpn localize --sweep`: the two thresholds, the average mAP and the mAP at tIoU 0.5 (%)."""
    return f"{class_threshold:>10g}{tcam_threshold:>10g}{100 * average:>10.2f}{100 * at_half:>10.2f}"


def averages_line(name: str, row: Mapping[str, Any], note: str) -> str:
    """A scored setting's average mAP (%) under every protocol, "ActivityNet / toolkit", then a note."""
    averages = " / ".join(f"{100 * row['protocols'][p]['average_mAP']:6.2f}" for p in PROTOCOL_TITLES)
    return f"{name:<64} {averages}   ({note})"

"""`stpn report`: one self-contained HTML page (figures embedded as PNG) for a run or a seed study.

For a training work directory W (with W/raw_test.npz, from `stpn demo` or `stpn localize --save_raw`):
mAP against tIoU for each setting (the paper default, and the settings of W/tune.json when `stpn tune` ran),
per-class AP at tIoU 0.5, precision-recall at 0.5 per class, and the timelines (attention, weighted T-CAM,
detections, ground truth: the paper's figures 3 and 4) of the best and the worst test videos. For a study
directory (study.json from `stpn study`): mAP against tIoU for every seed with the mean, then the same page
for its first seed. matplotlib draws everything.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stpn_tf.artifacts import raw_outputs  # noqa: E402
from stpn_tf.core.errors import StpnError  # noqa: E402
from stpn_tf.core.streams import TWO_STREAMS  # noqa: E402
from stpn_tf.evaluation.activitynet import activitynet_hits  # noqa: E402
from stpn_tf.evaluation.matching import segment_tiou  # noqa: E402
from stpn_tf.tuning.sweep import Sweeper, describe, objective_value  # noqa: E402
from stpn_tf.core.atomic import atomic_write_text  # noqa: E402
from stpn_tf.core.tables import PROTOCOL_TITLES, short_title  # noqa: E402
from stpn_tf.artifacts.ground_truth import load_ground_truth  # noqa: E402
from stpn_tf.workflows.plots import plot_timeline  # noqa: E402
from stpn_tf.localize import timeline  # noqa: E402
from stpn_tf.localize.config import LocalizerConfig  # noqa: E402


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def map_figure(curves: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str) -> bytes:
    """mAP (%) against tIoU, one line per name, one panel per protocol: {name: {protocol: {tiou_thresholds, mAP}}}."""
    figure = Figure(figsize=(10, 3.6))
    for i, protocol in enumerate(PROTOCOL_TITLES):
        ax = figure.add_subplot(1, 2, i + 1)
        for name, by_protocol in curves.items():
            r = by_protocol[protocol]
            ax.plot(r["tiou_thresholds"], 100 * np.asarray(r["mAP"]), marker="o", label=name)
        ax.set_xlabel("tIoU")
        ax.set_ylabel("mAP (%)")
        ax.set_title(f"{title}: {short_title(protocol)}")
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def class_ap_figure(per_class: Mapping[str, Mapping[str, float]]) -> bytes:
    """Per-class AP (%) at tIoU 0.5, horizontal bars grouped by class: {setting: {class: AP}}."""
    names = list(per_class)
    classes = list(next(iter(per_class.values())))
    figure = Figure(figsize=(6.5, .9 + .26 * len(classes) * max(1, len(names)) ** .5))
    ax = figure.add_subplot(1, 1, 1)
    height = .8 / max(len(names), 1)
    y = np.arange(len(classes))[::-1]  # the first class on top, as in the table beside the chart
    for i, name in enumerate(names):
        ax.barh(y + .4 - height / 2 - i * height, [100 * per_class[name][c] for c in classes], height, label=name)
    ax.set_yticks(y, classes, fontsize=8)
    ax.set_xlabel("AP (%) at tIoU 0.5 (ActivityNet protocol)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=.3)
    ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return _png(figure)


def pr_figure(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], classes: Sequence[str]) -> bytes:
    """Precision against recall at tIoU 0.5: one small panel per class, one line per setting (distinct
    colours, one legend), so no two classes share a colour or a panel.

    Args:
      curves: {setting: {class: (recall [N], precision [N])}}; a class without predictions has no curve.
      classes: The classes of the panels, in order.
    """
    columns = min(5, max(1, len(classes)))
    rows = -(-len(classes) // columns) if classes else 1
    figure = Figure(figsize=(2.3 * columns, 1.9 * rows + .6))
    colours = matplotlib.colormaps["tab10"]
    handles = {}
    for i, cls in enumerate(classes):
        ax = figure.add_subplot(rows, columns, i + 1)
        for j, (name, by_class) in enumerate(curves.items()):
            if cls in by_class:
                rec, prec = by_class[cls]
                handles[name], = ax.plot(rec, prec, linewidth=1.1, color=colours(j % 10), label=name)
        if not any(cls in by_class for by_class in curves.values()):
            ax.text(.5, .5, "no predictions", ha="center", va="center", fontsize=7, color="gray")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(cls, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=.3)
        if i % columns == 0:
            ax.set_ylabel("precision", fontsize=7)
        if i >= len(classes) - columns:
            ax.set_xlabel("recall", fontsize=7)
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="upper center", ncol=len(handles), fontsize=8,
                      frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - .45 / (1.9 * rows + .6)))
    return _png(figure)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"<td class='num'>{value:.2f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """An HTML table; floats with two decimals, right-aligned."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    caption = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def map_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """The mAP (%) of each setting and protocol at each tIoU and on average, as an HTML table:
    {setting: Sweeper.score row}."""
    first = next(iter(rows.values()))["protocols"]
    thresholds = next(iter(first.values()))["tiou_thresholds"]
    header = ["setting", "protocol"] + [f"{t:.2f}" for t in thresholds] + ["avg"]
    body = [[name, short_title(protocol)] + [100 * float(x) for x in r["mAP"]] + [100 * float(r["average_mAP"])]
            for name, row in rows.items() for protocol, r in row["protocols"].items()]
    return _table(header, body, "mAP (%) on the test split at each tIoU threshold")


def precision_recall(data, threshold: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class, recall and precision along the ranked predictions (ActivityNet matching at `threshold`)."""
    tp, bounds, npos = activitynet_hits(data, [threshold])
    out = {}
    for c, name in enumerate(data.classes):
        hits = tp[bounds[c]:bounds[c + 1], 0]
        if npos[c] == 0 or len(hits) == 0:
            continue
        tp_cum = np.cumsum(hits)
        out[name] = (tp_cum / npos[c], tp_cum / np.arange(1, len(hits) + 1))
    return out


def video_quality(data) -> dict[int, float]:
    """Per ground-truth video: mean over its segments of the best tIoU with a detection of the same label."""
    best = np.zeros(len(data.gt_label))
    for i in range(len(data.gt_label)):
        same = (data.pred_video == data.gt_video[i]) & (data.pred_label == data.gt_label[i])
        if np.any(same):
            best[i] = segment_tiou(data.pred_start[same], data.pred_end[same], data.gt_start[i], data.gt_end[i]).max()
    return {int(v): float(best[data.gt_video == v].mean()) for v in np.unique(data.gt_video)}


def _timeline_png(raw, index: int, results: Mapping[str, Any], truth) -> bytes:
    length = int(raw["length"][index])
    video_id = str(raw["video_id"][index])
    times = timeline.grid_to_seconds(np.arange(length) + 0.5, length=length,
                                     num_snippets=int(raw["num_snippets"][index]),
                                     seconds_per_snippet=float(raw["seconds_per_snippet"][index]),
                                     duration=float(raw["duration"][index]))
    classes = [str(c) for c in raw["classes"]]
    streams = [s for s in ("rgb", "flow") if f"{s}/attention" in raw]
    attention = {s.upper(): raw[f"{s}/attention"][index, :length] for s in streams}
    psi = np.mean([raw[f"{s}/attention"][index, :length, None] / (1 + np.exp(-raw[f"{s}/tcam"][index, :length]))
                   for s in streams], axis=0)
    detections = sorted(results["results"].get(video_id, []), key=lambda d: -d["score"])[:30]
    truth_segments = [s for r in truth if r.video_id == video_id for s in r.segments]
    shown = sorted({d["label"] for d in detections[:5]} | {s.label for s in truth_segments})
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_timeline(os.path.join(tmp, "timeline.png"), video_id=video_id, times=np.asarray(times),
                             attention=attention, tcam={c: psi[:, classes.index(c)] for c in shown if c in classes},
                             detections=detections, ground_truth=truth_segments,
                             duration=float(raw["duration"][index]), tcam_label="weighted T-CAM")
        with open(path, "rb") as f:
            return f.read()


Section = tuple  # (heading, text, [(figure name, PNG)], html beside the figures: "" for none)


def run_sections(workdir: str, *, raw_path: str, truth_path: str, subset: str, default: LocalizerConfig,
                 unknown_labels_as_fp: bool = False, objective: str = "min") -> list[Section]:
    """The sections of a run's page: [(heading, text, [(figure name, PNG)], html beside the figures)].

    Each setting's line quotes the tuning objective (stpn_tf.tuning.sweep.OBJECTIVES, as `stpn tune`
    ranks) beside both protocols.

    A run of one stream (RGB only, say) gets the same page for that stream; its first section says so.

    Raises:
      StpnError: Naming the file at fault (the raw outputs, the ground truth, tune.json).
    """
    raw = raw_outputs.load_raw(raw_path)
    truth = load_ground_truth(truth_path, subset)
    held = raw_outputs.raw_streams(raw)
    streams = tuple(s for s in TWO_STREAMS if s in held) or held[:1]
    settings = {"paper default": default}
    tune_path = os.path.join(workdir, "tune.json")
    if os.path.exists(tune_path):
        try:
            with open(tune_path) as f:
                tuned = json.load(f)
            label = "tuned on TEST (optimistic)" if tuned.get("tuned_on_test_split") else f"tuned on {tuned['tuned_on']}"
            chosen = LocalizerConfig.from_dict(tuned["chosen"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise StpnError(f"{tune_path}: not a tune.json written by `stpn tune` ({type(error).__name__}: "
                            f"{error})") from None
        if tuned.get("chosen_all_snippets"):
            # stpn tune chose every snippet; this page has one set of raw outputs (raw_path) for all rows.
            label += f" (chosen with every snippet, scored here on {os.path.basename(raw_path)})"
        settings[label] = chosen
    try:
        sweeper = Sweeper(raw, truth, streams=streams, protocols=tuple(PROTOCOL_TITLES),
                          unknown_labels_as_fp=unknown_labels_as_fp)
        rows = {name: sweeper.score(config) for name, config in settings.items()}
        data = {name: sweeper.eval_data(config) for name, config in settings.items()}
    except StpnError as error:
        if raw_path in str(error) or truth_path in str(error):
            raise
        raise StpnError(f"{raw_path} against {truth_path}: {error}") from None
    from stpn_tf.evaluation.activitynet import activitynet_ap

    per_class = {}
    for name, d in data.items():
        ap = activitynet_ap(d, [0.5])[:, 0]
        per_class[name] = dict(zip(d.classes, ap))
    names = " and ".join(s.upper() if s == "rgb" else s for s in streams)
    if len(streams) == 1:
        scope = (f"This run has the {names} stream only (its raw outputs hold no other): every figure is of that "
                 "stream alone; two-stream figures are skipped. ")
    else:
        scope = f"Two-stream localization ({names}). "
    text = scope + "; ".join(f"{name}: {describe(settings[name])}, objective ({objective}) "
                             f"{100 * objective_value(rows[name], objective):.2f}" for name in rows)
    classes = list(next(iter(per_class.values())))
    class_rows = [[c] + [100 * float(per_class[n][c]) for n in per_class] for c in classes]
    class_table = _table(["class"] + [f"AP (%) {n}" for n in per_class], class_rows,
                         "AP (%) at tIoU 0.5 (ActivityNet protocol)")
    sections = [("mAP against tIoU", text, [("map_vs_tiou", map_figure({n: r["protocols"] for n, r in rows.items()},
                                                                        "test split"))], map_table(rows)),
                ("Per-class AP at tIoU 0.5", "", [("per_class_ap", class_ap_figure(per_class))], class_table),
                ("Precision-recall at tIoU 0.5", "One panel per class, one line per setting (ActivityNet matching).",
                 [("precision_recall", pr_figure({n: precision_recall(d) for n, d in data.items()}, classes))], "")]
    default_data = data["paper default"]
    quality = video_quality(default_data)
    ranked = sorted(quality, key=lambda v: (-quality[v], v))
    index_of = {str(v): i for i, v in enumerate(raw["video_id"])}
    results = sweeper.results(default)
    figures = []
    picks = [("best", v) for v in ranked[:2]] + [("worst", v) for v in ranked[-2:]]
    for kind, v in picks:
        video_id = default_data.video_ids[v]
        if video_id in index_of:
            figures.append((f"timeline_{kind}_{video_id}", _timeline_png(raw, index_of[video_id], results, truth)))
    sections.append(("Timelines of the best and the worst test videos",
                     "Paper default settings; videos ranked by the mean over their ground-truth segments of the best "
                     "tIoU with a detection of the same class. Rows: ground truth, detections (scores of the top "
                     f"ones), attention ({names}), weighted T-CAM of the best-scored and the annotated classes.",
                     figures, ""))
    return sections


def study_section(study: Mapping[str, Any]) -> Section:
    figures = []
    for name in study["aggregate"]:
        curves = {f"seed {s}": study["per_seed"][str(s)][name] for s in study["seeds"]}
        curves["mean"] = {p: {"tiou_thresholds": a["tiou_thresholds"], "mAP": a["mAP"]["mean"]}
                          for p, a in study["aggregate"][name].items()}
        figures.append((f"seeds_{name.replace(' ', '_')}", map_figure(curves, name)))
    agg = study["aggregate"]
    text = "; ".join(f"{name}: average mAP (ActivityNet) mean {100 * a['activitynet']['average_mAP']['mean']:.2f}, "
                     f"std {100 * a['activitynet']['average_mAP']['std']:.2f}, min "
                     f"{100 * a['activitynet']['average_mAP']['min']:.2f}, max "
                     f"{100 * a['activitynet']['average_mAP']['max']:.2f}" for name, a in agg.items())
    return (f"Seed study ({len(study['seeds'])} seeds)", text, figures, "")


_STYLE = ("body{font-family:sans-serif;max-width:1300px;margin:auto;padding:1em}"
          "img{max-width:100%;display:block;margin:.5em 0}"
          ".row{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}.row img{flex:0 1 auto}"
          "table{border-collapse:collapse;font-size:13px;margin:.5em 0}caption{text-align:left;font-weight:bold;"
          "padding:.3em 0}th,td{border-bottom:1px solid #ddd;padding:2px 8px}th{background:#f3f3f3}"
          "td.num{text-align:right;font-variant-numeric:tabular-nums}")


def write_html(path: str, title: str, sections: Sequence[Section]) -> int:
    """Writes the page atomically; returns the number of figures. A script on the page sets the document
    title to "rendered N/M" once loaded (N figures decoded with a nonzero size), for headless checks.

    Args:
      path: The HTML file.
      title: The page's heading (the run's name).
      sections: (heading, text, [(figure name, PNG)][, html shown beside the figures: a table]).
    """
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    count = 0
    for heading, text, figures, *beside in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            parts.append(f"<p>{html.escape(text)}</p>")
        images = []
        for name, png in figures:
            count += 1
            data = base64.b64encode(png).decode("ascii")
            images.append(f"<img class='figure' alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
        extra = beside[0] if beside else ""
        parts.append(f"<div class='row'>{''.join(images)}<div>{extra}</div></div>" if extra else "\n".join(images))
    parts.append("<script>window.addEventListener('load',function(){var f=document.querySelectorAll('img.figure');"
                 "var ok=0;f.forEach(function(i){if(i.complete&&i.naturalWidth>0)ok++;});"
                 "document.title='rendered '+ok+'/'+f.length;});</script></body></html>")
    atomic_write_text(path, "\n".join(parts) + "\n", make_parents=True)
    return count


def page_title(workdir: str) -> str:
    """The page's title: the run's name (its directory's name), not a path of this machine."""
    return f"stpn_tf report: {os.path.basename(os.path.normpath(os.path.abspath(workdir)))}"


def check_inputs(raw_path: str, streams: Sequence[str] = ("rgb", "flow")) -> None:
    """Refuses a run without raw outputs, naming the command that writes them for its trained `streams`."""
    if not os.path.exists(raw_path):
        only = f" --streams={streams[0]}" if len(streams) == 1 else ""
        raise StpnError(f"{raw_path}: raw test outputs not found; run `stpn localize --workdir=W{only} "
                        f"--save_raw={raw_path}` first (stpn demo writes them)")

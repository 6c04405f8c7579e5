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

from stpn_tf.inference import predict  # noqa: E402
from stpn_tf.core.errors import StpnError  # noqa: E402
from stpn_tf.evaluation.activitynet import activitynet_hits  # noqa: E402
from stpn_tf.evaluation.matching import segment_tiou  # noqa: E402
from stpn_tf.tuning.sweep import Sweeper, describe  # noqa: E402
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
    """Per-class AP (%) at tIoU 0.5, bars grouped by class: {setting: {class: AP}}."""
    names = list(per_class)
    classes = list(next(iter(per_class.values())))
    figure = Figure(figsize=(11, 3.8))
    ax = figure.add_subplot(1, 1, 1)
    width = .8 / max(len(names), 1)
    for i, name in enumerate(names):
        ax.bar(np.arange(len(classes)) + i * width, [100 * per_class[name][c] for c in classes], width, label=name)
    ax.set_xticks(np.arange(len(classes)) + .4 - width / 2, classes, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("AP (%) at tIoU 0.5 (ActivityNet protocol)")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def pr_figure(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]) -> bytes:
    """Precision against recall at tIoU 0.5 per class, one panel per setting: {setting: {class: (rec, prec)}}."""
    figure = Figure(figsize=(5 * len(curves), 3.8))
    for i, (name, by_class) in enumerate(curves.items()):
        ax = figure.add_subplot(1, len(curves), i + 1)
        for cls, (rec, prec) in by_class.items():
            ax.plot(rec, prec, linewidth=.8, label=cls)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{name} (tIoU 0.5)", fontsize=9)
        ax.grid(alpha=.3)
    figure.tight_layout()
    return _png(figure)


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


def run_sections(workdir: str, *, raw_path: str, truth_path: str, subset: str, default: LocalizerConfig,
                 unknown_labels_as_fp: bool = False) -> list[tuple[str, str, list[tuple[str, bytes]]]]:
    """The sections of a run's page: [(heading, text, [(figure name, PNG)])]."""
    raw = predict.load_raw(raw_path)
    truth = load_ground_truth(truth_path, subset)
    settings = {"paper default": default}
    tune_path = os.path.join(workdir, "tune.json")
    if os.path.exists(tune_path):
        with open(tune_path) as f:
            tuned = json.load(f)
        label = "tuned on TEST (optimistic)" if tuned.get("tuned_on_test_split") else f"tuned on {tuned['tuned_on']}"
        if tuned.get("chosen_all_snippets"):
            # stpn tune chose every snippet; this page has one set of raw outputs (raw_path) for all rows.
            label += f" (chosen with every snippet, scored here on {os.path.basename(raw_path)})"
        settings[label] = LocalizerConfig.from_dict(tuned["chosen"])
    sweeper = Sweeper(raw, truth, protocols=tuple(PROTOCOL_TITLES), unknown_labels_as_fp=unknown_labels_as_fp)
    rows = {name: sweeper.score(config) for name, config in settings.items()}
    data = {name: sweeper.eval_data(config) for name, config in settings.items()}
    from stpn_tf.evaluation.activitynet import activitynet_ap

    per_class = {}
    for name, d in data.items():
        ap = activitynet_ap(d, [0.5])[:, 0]
        per_class[name] = dict(zip(d.classes, ap))
    text = "; ".join(f"{name}: {describe(settings[name])}, average mAP {100 * r['average_mAP']:.2f} "
                     f"(ActivityNet) / {100 * r['protocols']['th14kit']['average_mAP']:.2f} (toolkit)"
                     for name, r in rows.items())
    sections = [("mAP against tIoU", text, [("map_vs_tiou", map_figure({n: r["protocols"] for n, r in rows.items()},
                                                                        "test split"))]),
                ("Per-class AP at tIoU 0.5", "", [("per_class_ap", class_ap_figure(per_class))]),
                ("Precision-recall at tIoU 0.5", "One curve per class (ActivityNet matching).",
                 [("precision_recall", pr_figure({n: precision_recall(d) for n, d in data.items()}))])]
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
                     "tIoU with a detection of the same class. Rows: ground truth, detections, attention, weighted "
                     "T-CAM.", figures))
    return sections


def study_section(study: Mapping[str, Any]) -> tuple[str, str, list[tuple[str, bytes]]]:
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
    return (f"Seed study ({len(study['seeds'])} seeds)", text, figures)


def write_html(path: str, title: str, sections: Sequence[tuple[str, str, Sequence[tuple[str, bytes]]]]) -> int:
    """Writes the page atomically; returns the number of figures. A script on the page sets the document
    title to "rendered N/M" once loaded (N figures decoded with a nonzero size), for headless checks."""
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "img{max-width:100%;display:block;margin:.5em 0}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    count = 0
    for heading, text, figures in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            parts.append(f"<p>{html.escape(text)}</p>")
        for name, png in figures:
            count += 1
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<img class='figure' alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("<script>window.addEventListener('load',function(){var f=document.querySelectorAll('img.figure');"
                 "var ok=0;f.forEach(function(i){if(i.complete&&i.naturalWidth>0)ok++;});"
                 "document.title='rendered '+ok+'/'+f.length;});</script></body></html>")
    atomic_write_text(path, "\n".join(parts) + "\n", make_parents=True)
    return count


def check_inputs(raw_path: str) -> None:
    if not os.path.exists(raw_path):
        raise StpnError(f"{raw_path}: raw test outputs not found; run `stpn localize --workdir=W "
                        f"--save_raw={raw_path}` first (stpn demo writes them)")

"""Per-video timeline figure in the style of the STPN paper's Figures 3 and 4.

Rows, top to bottom, on one time axis in seconds: ground truth intervals (when given), detected
intervals (one lane per class, opacity by score), the class-agnostic attention of each stream, and
the T-CAM curves of the detected classes. Times come in already converted (stpn_tf.timeline is the
one place that maps snippet indices to seconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_output


def _interval(item: Any) -> tuple[str, float, float, float | None]:
    """(label, start, end, score) from an ActivityNet-style dict or an object with start/end/label."""
    if isinstance(item, Mapping):
        start, end = item["segment"]
        return str(item["label"]), float(start), float(end), (
            float(item["score"]) if "score" in item else None)
    return str(item.label), float(item.start), float(item.end), getattr(item, "score", None)


def _curves(name: str, values: np.ndarray | Mapping[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    if not isinstance(values, Mapping):
        values = {"": values}
    out = {}
    for key, curve in values.items():
        curve = np.asarray(curve, dtype=np.float64)
        if curve.shape != (length,):
            raise StpnError(f"plot: {name} {key!r} has shape {list(curve.shape)}, expected [{length}] "
                            "like times")
        if not np.all(np.isfinite(curve)):
            raise StpnError(f"plot: {name} {key!r} contains NaN or infinite values")
        out[key] = curve
    return out


# Score labels: at most this many per lane, and none overlapping another (a label is about this fraction
# of the time axis wide at fontsize 7 on a 10-inch figure).
MAX_LABELS_PER_LANE = 3
LABEL_WIDTH = 0.045


def score_labels(intervals: Sequence[tuple[str, float, float, float | None]], *,
                 span: float) -> list[tuple[float, float]]:
    """Which detections of one lane get their score written: the best-scored first, each only where its
    label does not overlap one already placed, at most MAX_LABELS_PER_LANE.

    Args:
      intervals: (label, start, end, score) of one lane; entries without a score get no label.
      span: Length of the time axis in seconds (the labels' width scales with it).

    Returns:
      [(start in seconds, score)] of the labelled detections, best first.
    """
    width = LABEL_WIDTH * max(span, 1e-6)
    placed: list[tuple[float, float]] = []
    for _, start, _, score in sorted((i for i in intervals if i[3] is not None), key=lambda i: -i[3]):
        if len(placed) == MAX_LABELS_PER_LANE:
            break
        if all(abs(start - other) >= width for other, _ in placed):
            placed.append((start, score))
    return placed


def plot_timeline(out_path: str, *, video_id: str, times: np.ndarray,
                  attention: np.ndarray | Mapping[str, np.ndarray],
                  tcam: Mapping[str, np.ndarray] | None = None,
                  detections: Sequence[Any] = (), ground_truth: Sequence[Any] | None = None,
                  duration: float | None = None, tcam_label: str = "T-CAM") -> str:
    """Draws the timeline of one video and writes it as a PNG atomically.

    Args:
        out_path: PNG file to write (directories are created).
        video_id: Title of the figure.
        times: float [T] seconds of each curve sample.
        attention: float [T] attention, or {stream name: [T]} (e.g. {"RGB": ..., "FLOW": ...}).
        tcam: {class name: [T]} T-CAM curves to draw (normally those of the detected classes).
        detections: Detections as ActivityNet result dicts {"label", "score", "segment": [s, e]} or
            objects with label/start/end(/score).
        ground_truth: Ground truth as dicts {"label", "segment"} or objects with label/start/end
            (e.g. stpn_tf.artifacts.annotations.Segment); None hides the row.
        duration: Video length in seconds (x-axis limit); default the last time.
        tcam_label: Y label of the T-CAM row (e.g. "weighted T-CAM").

    Returns:
        out_path.

    Raises:
        StpnError: curves that do not match `times`, or non-finite values.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise StpnError(f"plot: times must be a non-empty 1-D array, got shape {list(times.shape)}")
    attention_curves = _curves("attention", attention, times.size)
    tcam_curves = _curves("T-CAM", tcam or {}, times.size)
    detected = [_interval(d) for d in detections]
    truth = None if ground_truth is None else [_interval(g) for g in ground_truth]
    end_time = float(duration) if duration is not None else float(times[-1])

    classes = sorted({d[0] for d in detected} | set(tcam_curves) | {g[0] for g in truth or []})
    palette = matplotlib.colormaps["tab10"]
    colors = {name: palette(i % 10) for i, name in enumerate(classes)}

    rows = (["truth"] if truth is not None else []) + ["detections", "attention", "tcam"]
    heights = {"truth": 0.6 + 0.3 * max(1, len({g[0] for g in truth or []})),
               "detections": 0.6 + 0.3 * max(1, len({d[0] for d in detected})),
               "attention": 1.6, "tcam": 1.8}
    figure = Figure(figsize=(10, sum(heights[r] for r in rows) + 0.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 1, sharex=True,
                           gridspec_kw={"height_ratios": [heights[r] for r in rows]})
    axes = np.atleast_1d(axes)
    figure.suptitle(video_id)

    for axis, row in zip(axes, rows):
        if row in ("truth", "detections"):
            intervals = truth if row == "truth" else detected
            lanes = sorted({i[0] for i in intervals})
            for lane, name in enumerate(lanes):
                in_lane = [i for i in intervals if i[0] == name]
                for label, start, end, score in in_lane:
                    alpha = 1.0 if score is None else 0.35 + 0.65 * float(np.clip(score, 0, 1))
                    axis.barh(lane, end - start, left=start, height=0.6, color=colors[name], alpha=alpha)
                for start, score in score_labels(in_lane, span=end_time):
                    axis.text(start, lane + 0.35, f"{score:.2f}", fontsize=7, va="bottom")
            axis.set_yticks(range(len(lanes)), lanes, fontsize=8)
            axis.set_ylim(-0.6, max(len(lanes), 1) - 0.05)  # room for the score labels
            axis.set_ylabel("ground truth" if row == "truth" else "detections", fontsize=9)
            if not lanes:
                axis.text(0.5, 0.5, "no ground truth" if row == "truth" else "no detections",
                          transform=axis.transAxes, ha="center", va="center", color="gray")
                axis.set_yticks([])
        elif row == "attention":
            # Streams in neutral tones with distinct dashes, so class colors stay unambiguous.
            styles = [("black", "-"), ("dimgray", "--"), ("darkgray", ":")]
            for index, (name, curve) in enumerate(attention_curves.items()):
                color, dash = styles[index % len(styles)]
                axis.plot(times, curve, label=name or None, color=color, linestyle=dash, linewidth=1.2)
            axis.set_ylim(-0.05, 1.05)
            axis.set_ylabel("attention", fontsize=9)
            if any(attention_curves):
                axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0,
                            frameon=False)
        else:
            for name, curve in tcam_curves.items():
                axis.plot(times, curve, label=name, color=colors[name], linewidth=1.2)
            axis.set_ylabel(tcam_label, fontsize=9)
            if tcam_curves:
                # Beside the axes, inside the figure (tight_layout makes room): many classes never cover
                # the curves nor spill below the figure.
                axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0,
                            ncol=1 + (len(tcam_curves) - 1) // 12, frameon=False)
            else:
                axis.text(0.5, 0.5, "no detected classes", transform=axis.transAxes, ha="center",
                          va="center", color="gray")
        axis.grid(axis="x", alpha=0.3)
    axes[-1].set_xlim(0.0, max(end_time, 1e-6))
    axes[-1].set_xlabel("time (s)")
    figure.tight_layout()

    with atomic_output(out_path, make_parents=True) as temporary:
        figure.savefig(temporary, format="png")
    return out_path

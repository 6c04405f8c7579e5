"""Tests for stpn_tf.workflows.plots: the timeline figure is a valid PNG, written atomically, in every case."""

import os

import numpy as np
import pytest

from stpn_tf.artifacts.annotations import Segment
from stpn_tf.core.errors import StpnError
from stpn_tf.workflows.plots import plot_timeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) from the IHDR chunk: bytes 16..24 big-endian."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == PNG_SIGNATURE and header[12:16] == b"IHDR"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def _curves(length=200):
    times = np.arange(length) * 0.64  # 16 frames at 25 fps per snippet
    bump = np.exp(-0.5 * ((times - 40.0) / 5.0) ** 2)
    return times, bump


def test_full_figure_is_a_png(tmp_path):
    times, bump = _curves()
    out = str(tmp_path / "figs" / "video_test_0000004.png")
    result = plot_timeline(
        out, video_id="video_test_0000004", times=times,
        attention={"RGB": 0.1 + 0.8 * bump, "FLOW": 0.05 + 0.9 * bump},
        tcam={"CliffDiving": bump, "Diving": 0.6 * bump},
        detections=[{"label": "CliffDiving", "score": 0.91, "segment": [33.0, 47.5]},
                    {"label": "Diving", "score": 0.40, "segment": [35.0, 44.0]}],
        ground_truth=[Segment(34.2, 46.0, "CliffDiving"), Segment(34.2, 46.0, "Diving")],
        duration=128.0)
    assert result == out
    width, height = _png_size(out)
    # figsize 10 in at 100 dpi -> 1000 px wide; rows make it taller than wide is not expected.
    assert width == 1000 and 300 < height < 1000
    assert [n for n in os.listdir(tmp_path / "figs") if n.startswith(".tmp")] == []


def test_no_detections_and_no_ground_truth(tmp_path):
    times, bump = _curves(50)
    out = str(tmp_path / "empty.png")
    plot_timeline(out, video_id="quiet", times=times, attention=0.2 * bump, tcam={}, detections=[])
    assert _png_size(out)[0] == 1000
    # A ground-truth row with nothing in it is drawn too (empty list, not None).
    plot_timeline(out, video_id="quiet", times=times, attention=0.2 * bump, detections=[],
                  ground_truth=[])
    assert _png_size(out)[0] == 1000


def test_mismatched_or_nan_curves_fail_without_writing(tmp_path):
    times, bump = _curves(50)
    out = tmp_path / "bad.png"
    with pytest.raises(StpnError, match="expected \\[50\\]"):
        plot_timeline(str(out), video_id="v", times=times, attention=bump[:40])
    with pytest.raises(StpnError, match="NaN"):
        plot_timeline(str(out), video_id="v", times=times, attention=bump,
                      tcam={"Diving": np.full(50, np.nan)})
    assert not out.exists()


def test_score_labels_never_overlap_and_the_best_come_first():
    from stpn_tf.workflows.plots import MAX_LABELS_PER_LANE, score_labels

    # On a 100 s axis a label is 4.5 s wide: detections starting at 10, 11, 12 (scores .4, .9, .5) share one
    # place, so only the best of them (.9 at 11 s) is written; 30 s and 60 s are free; 61 s is too close.
    lane = [("A", 10., 20., .4), ("A", 11., 19., .9), ("A", 12., 15., .5), ("A", 30., 35., .3),
            ("A", 60., 70., .2), ("A", 61., 62., .1), ("A", 80., 90., None)]
    assert score_labels(lane, span=100.) == [(11., .9), (30., .3), (60., .2)]
    # The case: many overlapping detections gave "4.54.45.4.2.68.23"; now at most three, apart.
    crowded = [("A", 5. + .1 * i, 9., float(i)) for i in range(20)] + [("A", 50. + i, 60., 1.) for i in range(9)]
    placed = score_labels(crowded, span=60.)
    assert len(placed) == MAX_LABELS_PER_LANE and placed[0] == (6.9, 19.)
    starts = sorted(start for start, _ in placed)
    assert all(b - a >= .045 * 60. for a, b in zip(starts, starts[1:]))


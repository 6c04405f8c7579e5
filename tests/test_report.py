"""`stpn report`: the page embeds every figure as a PNG that decodes; headless Chromium renders them."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib import image

from stpn_tf.artifacts import raw_outputs
from stpn_tf.workflows import report
from stpn_tf.evaluation.matching import EvalData
from stpn_tf.localize.config import LocalizerConfig
from tests.helpers.raw import SWEEP_BOUNDS as BOUNDS, sweep_ground_truth as _ground_truth, sweep_raw as _raw


def _write_truth(path, records):
    database = {r.video_id: {"subset": r.subset, "duration": r.duration,
                             "annotations": [{"segment": [s.start, s.end], "label": s.label} for s in r.segments]}
                for r in records}
    path.write_text(json.dumps({"database": database}))


def _figures(page: str):
    return re.findall(r"alt='([^']*)' src='data:image/png;base64,([^']*)'", page)


def test_precision_recall_and_video_quality_by_hand():
    # One class, two ground-truth segments in video 0; ranked predictions: hit, miss, hit.
    data = EvalData(classes=["A"], video_ids=["v0", "v1"], gt_video=np.array([0, 0]), gt_label=np.array([0, 0]),
                    gt_start=np.array([0., 10.]), gt_end=np.array([4., 14.]), amb_video=np.zeros(0, int),
                    amb_start=np.zeros(0), amb_end=np.zeros(0), pred_video=np.array([0, 1, 0]),
                    pred_label=np.array([0, 0, 0]), pred_start=np.array([0., 0., 10.]), pred_end=np.array([4., 4., 12.]),
                    pred_score=np.array([.9, .8, .7]))
    rec, prec = report.precision_recall(data)["A"]
    np.testing.assert_allclose(rec, [.5, .5, 1.])
    np.testing.assert_allclose(prec, [1., .5, 2 / 3])
    # Video 0: best tIoUs 1 (first segment) and 2 / 4 = .5 (second) -> .75.
    assert report.video_quality(data) == {0: .75}


def test_report_page_embeds_rendered_figures(tmp_path):
    raw = _raw(num_videos=9, t=16)
    truth = _ground_truth(raw)
    raw_path, truth_path = tmp_path / "raw_test.npz", tmp_path / "gt.json"
    raw_outputs.save_raw(str(raw_path), raw)
    _write_truth(truth_path, truth)
    (tmp_path / "tune.json").write_text(json.dumps({"tuned_on": "train", "tuned_on_test_split": False,
                                                    "chosen": LocalizerConfig(**BOUNDS).replace(nms="soft").to_dict()}))
    sections = report.run_sections(str(tmp_path), raw_path=str(raw_path), truth_path=str(truth_path),
                                   subset="validation", default=LocalizerConfig(**BOUNDS), unknown_labels_as_fp=True)
    out = tmp_path / "report.html"
    count = report.write_html(str(out), report.page_title(str(tmp_path / "runs" / "my_run")), sections)
    page = out.read_text()
    figures = _figures(page)
    # The run's name, not this machine's path; the mAP table (both settings, both protocols); the per-class
    # numbers beside the per-class chart (one row per class).
    assert "<h1>stpn_tf report: my_run</h1>" in page and str(tmp_path) not in page
    assert "objective (min)" in sections[0][1]  # the tuning objective (the lower protocol), as `stpn tune` ranks
    assert page.count("<td>THUMOS14 toolkit</td>") == 2 and "mAP (%) on the test split" in page
    per_class = page[page.index("alt='per_class_ap'"):page.index("Precision-recall")]
    assert "<table>" in per_class and per_class.count("<tr>") == 1 + 5  # header + the scored classes A..E
    # mAP vs tIoU, per-class AP, precision-recall, and the timelines of two best and two worst videos.
    assert count == len(figures) == 7
    assert [name for name, _ in figures][:3] == ["map_vs_tiou", "per_class_ap", "precision_recall"]
    assert sum(name.startswith("timeline_best") for name, _ in figures) == 2
    for name, data in figures:
        pixels = image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0, name
    assert "tuned on train" in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless check skipped: Debian's chromium is not installed (apt-get install chromium)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert f"<title>rendered {count}/{count}</title>" in dom


def test_report_of_a_single_stream_run(tmp_path):
    """A run that trained RGB only: the page is made from that stream and says so; no flow is asked for."""
    raw = {k: v for k, v in _raw(num_videos=6, t=16).items() if not k.startswith("flow/")}
    truth = _ground_truth(raw)
    raw_path, truth_path = tmp_path / "raw_test.npz", tmp_path / "gt.json"
    raw_outputs.save_raw(str(raw_path), raw)
    _write_truth(truth_path, truth)
    sections = report.run_sections(str(tmp_path), raw_path=str(raw_path), truth_path=str(truth_path),
                                   subset="validation", default=LocalizerConfig(**BOUNDS), unknown_labels_as_fp=True)
    assert "RGB stream only" in sections[0][1] and "two-stream figures are skipped" in sections[0][1]
    assert report.write_html(str(tmp_path / "r.html"), "one stream", sections) == 3 + len(sections[-1][2])


def test_report_errors_name_the_file(tmp_path):
    from stpn_tf.core.errors import StpnError

    raw = _raw(num_videos=4, t=16)
    raw_path, truth_path = tmp_path / "raw_test.npz", tmp_path / "gt.json"
    raw_outputs.save_raw(str(raw_path), raw)
    _write_truth(truth_path, _ground_truth(raw))
    (tmp_path / "tune.json").write_text(json.dumps({"tuned_on": "train"}))  # no "chosen"
    with pytest.raises(StpnError, match="tune.json: not a tune.json written by `stpn tune`"):
        report.run_sections(str(tmp_path), raw_path=str(raw_path), truth_path=str(truth_path), subset="validation",
                            default=LocalizerConfig(**BOUNDS), unknown_labels_as_fp=True)
    (tmp_path / "tune.json").unlink()
    _write_truth(truth_path, [])  # a ground truth of no video: the error names both files
    with pytest.raises(StpnError) as error:
        report.run_sections(str(tmp_path), raw_path=str(raw_path), truth_path=str(truth_path), subset="validation",
                            default=LocalizerConfig(**BOUNDS), unknown_labels_as_fp=True)
    assert str(truth_path) in str(error.value)


def test_missing_raw_outputs_are_a_clear_error(tmp_path):
    from stpn_tf.core.errors import StpnError

    with pytest.raises(StpnError, match="--save_raw"):
        report.check_inputs(str(tmp_path / "raw_test.npz"))
    with pytest.raises(StpnError, match="stpn localize --workdir=W --streams=rgb --save_raw="):
        report.check_inputs(str(tmp_path / "raw_test.npz"), ["rgb"])  # a run of one stream

"""Evaluation protocols: hand-worked cases for every rule, loaders, and vectorized == loop properties."""

import dataclasses
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from stpn_tf import evaluation
from stpn_tf.core import resources
from stpn_tf.artifacts import annotations as A
from stpn_tf.core.errors import StpnError
from stpn_tf.evaluation import activitynet, formats, matching, th14kit, thresholds
from stpn_tf.core import tables as report
from stpn_tf.artifacts import ground_truth
from tests.helpers import reference_evaluation as loops

ROOT = resources.resource_path(resources.THUMOS14)
KIT = resources.resource_path(resources.THUMOS14_TOOLKIT)


def rec(video, segments, ambiguous=()):
    """segments: [(start, end, label)] in file order."""
    return A.make_record(video, "test", None, [A.Segment(s, e, l) for s, e, l in segments], ambiguous)


def preds(*dets):
    """dets: (video, label, score, start, end) in input order -> ActivityNet results dict."""
    out = {}
    for v, l, c, s, e in dets:
        out.setdefault(v, []).append({"label": l, "score": c, "segment": [s, e]})
    return {"results": out}


def both(records, predictions, thr, **kw):
    """(ActivityNet per-class AP, kit per-class AP) and checks each against its loop reference."""
    data = matching.build_eval_data(records, predictions["results"], **kw)
    anet, kit = activitynet.activitynet_ap(data, thr), th14kit.th14kit_ap(data, thr)
    np.testing.assert_allclose(anet, loops.activitynet_ap_loop(data, thr), rtol=0, atol=1e-12)
    np.testing.assert_allclose(kit, loops.th14kit_ap_loop(data, thr), rtol=0, atol=1e-12)
    return anet, kit


# ---------------------------------------------------------------------------------------------- overlaps


def test_tiou_and_kit_overlap_by_hand():
    # [0,10] vs [5,15]: intersection 5, union 10 + 10 - 5 = 15 (= hull 15) -> 1/3 for both.
    assert matching.segment_tiou(0.0, 10.0, 5.0, 15.0) == pytest.approx(1 / 3, abs=1e-15)
    assert matching.kit_overlap(0.0, 10.0, 5.0, 15.0) == pytest.approx(1 / 3, abs=1e-15)
    # Touching and disjoint segments overlap 0; containment [2,4] in [0,10] -> 2/10.
    assert matching.segment_tiou(0.0, 5.0, 5.0, 10.0) == 0.0 and matching.kit_overlap(0.0, 5.0, 5.0, 10.0) == 0.0
    assert matching.segment_tiou(0.0, 5.0, 7.0, 10.0) == 0.0
    assert matching.segment_tiou(2.0, 4.0, 0.0, 10.0) == 0.2
    # Two zero-length segments: 0 (the official code would divide 0 by 0).
    assert matching.segment_tiou(3.0, 3.0, 3.0, 3.0) == 0.0


def test_matlab_colon_floats():
    # Matlab builds 0:0.1:1 from both ends: 3*0.1 = 0.30000000000000004 but 1 - 3*0.1 == 0.7 exactly,
    # where numpy.linspace gives 0.7000000000000001.
    pts = th14kit.matlab_colon(0.0, 0.1, 1.0)
    assert len(pts) == 11 and pts[3] == 0.1 * 3 and pts[7] == 0.7 and pts[6] == 0.6
    assert np.linspace(0, 1, 11)[7] != 0.7
    assert th14kit.matlab_colon(0.1, 0.1, 0.5).tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]


# ---------------------------------------------------------------------------------------------- matching


def test_fallback_duplicate_matches_second_ground_truth():
    # GT A=[0,10], B=[8,18]. p1 (0.9) [1,11]: tIoU A = 9/11, B = 3/17 -> takes A.
    # p2 (0.8) [2,12]: tIoU A = 8/12, B = [8,12] 4 / (10+10-4) = 0.25.
    # ActivityNet at 0.2: A is taken, p2 falls back to B (0.25 >= 0.2) -> TP, TP: AP = 0.5*1 + 0.5*1 = 1.
    # At 0.5: B's 0.25 < 0.5 -> p2 FP: precision [1, .5], recall [.5, .5] -> all-point AP = 0.5.
    # Kit (GT in file order takes the free detection of largest overlap): A takes p1 (9/11);
    # B's only free detection p2 overlaps 4/16 (hull [2,18]) = 0.25 -> TP at 0.2, FP at 0.5.
    # Kit 11-point AP at 0.5: recall points 0..0.5 (6 of 11) have max precision 1, the rest 0 -> 6/11.
    gt = [rec("v", [(0.0, 10.0, "x"), (8.0, 18.0, "x")])]
    p = preds(("v", "x", 0.9, 1.0, 11.0), ("v", "x", 0.8, 2.0, 12.0))
    anet, kit = both(gt, p, [0.2, 0.5])
    np.testing.assert_allclose(anet, [[1.0, 0.5]], atol=1e-15)
    np.testing.assert_allclose(kit, [[1.0, 6 / 11]], atol=1e-15)


def test_eleven_point_vs_all_point_on_the_same_curve():
    # GT: 4 segments in v. Ranked hits TP, FP, TP, FP (all at 0.5): precision [1, 1/2, 2/3, 1/2],
    # recall [.25, .25, .5, .5]. All-point: .25*1 + .25*(2/3) = 0.41666...
    # 11-point: r=0,.1,.2 -> 1; r=.30000000000000004,.4,.5 -> 2/3; r>=.6 -> 0: (3 + 3*2/3)/11 = 5/11.
    gt = [rec("v", [(0.0, 10.0, "x"), (20.0, 30.0, "x"), (40.0, 50.0, "x"), (60.0, 70.0, "x")])]
    p = preds(
        ("v", "x", 0.9, 0.0, 10.0),
        ("v", "x", 0.8, 100.0, 110.0),
        ("v", "x", 0.7, 20.0, 30.0),
        ("v", "x", 0.6, 200.0, 210.0),
    )
    anet, kit = both(gt, p, [0.5])
    assert anet[0, 0] == pytest.approx(0.25 + 0.25 * 2 / 3, abs=1e-15)
    assert kit[0, 0] == pytest.approx(5 / 11, abs=1e-15)


def test_kit_ground_truth_order_differs_from_score_order():
    # GT A=[0,10]. p1 (0.9) [0,6] overlaps 0.6, p2 (0.5) [0,10] overlaps 1.
    # ActivityNet: p1 first takes A (0.6 >= 0.5); p2 FP -> precision [1, .5], recall [1, 1] -> AP 1.
    # Kit: A takes the free detection of largest overlap, p2 -> ranked FP, TP: precision [0, .5],
    # recall [0, 1] -> every recall point has max precision 0.5 -> AP 0.5.
    gt = [rec("v", [(0.0, 10.0, "x")])]
    p = preds(("v", "x", 0.9, 0.0, 6.0), ("v", "x", 0.5, 0.0, 10.0))
    anet, kit = both(gt, p, [0.5])
    assert anet[0, 0] == 1.0 and kit[0, 0] == pytest.approx(0.5, abs=1e-15)


def test_tiou_exactly_at_threshold():
    # Pred [0,5] vs GT [0,10]: tIoU = 5/10 = 0.5 exactly. ActivityNet needs >= -> TP (AP 1);
    # the kit needs > -> FP (AP 0).
    gt = [rec("v", [(0.0, 10.0, "x")])]
    anet, kit = both(gt, preds(("v", "x", 1.0, 0.0, 5.0)), [0.5])
    assert anet[0, 0] == 1.0 and kit[0, 0] == 0.0


def test_tiou_0_3_against_linspace_0_30000000000000004():
    # Pred [0,3] vs GT [0,10]: tIoU = 3/10 = 0.3 (the double 0.29999999999999998...), which is
    # below numpy.linspace(0.1, 0.9, 9)[2] = 0.30000000000000004, so it is a FP there, and a TP for
    # a literal 0.3 threshold. At 0.1 and 0.2 (0.2 >= 0.2) it is a TP.
    thr = np.linspace(0.1, 0.9, 9)
    assert thr[2] == 0.30000000000000004 and 3.0 / 10.0 < thr[2]
    gt = [rec("v", [(0.0, 10.0, "x")])]
    p = preds(("v", "x", 1.0, 0.0, 3.0))
    anet, kit = both(gt, p, list(thr) + [0.3])
    assert anet[0].tolist() == [1.0, 1.0] + [0.0] * 7 + [1.0]
    # Kit: strict >, so 0.3 > 0.1 and 0.3 > 0.2 pass, 0.3 > 0.30000000000000004 and 0.3 > 0.3 do not.
    assert kit[0].tolist() == [1.0, 1.0] + [0.0] * 8


def test_ambiguous_removes_only_unmatched_overlapping_detections():
    # GT x=[0,10], Ambiguous [20,30]. p_amb (0.9) [25,35] overlaps the Ambiguous segment -> dropped by
    # the kit; p_tp (0.8) [0,10] TP; p_touch (0.7) [30,40] only touches it (intersection 0) -> FP;
    # p_tp2 (0.6) [22,28] same class, no GT left -> FP unless Ambiguous -> dropped.
    # Kit ranked list: TP, FP -> precision [1, .5], recall [1, 1] -> AP 1.
    # ActivityNet ignores Ambiguous: FP, TP, FP, FP -> precision at the recall step = 1/2 -> AP 0.5.
    gt = [rec("v", [(0.0, 10.0, "x")], ambiguous=[(20.0, 30.0)])]
    p = preds(
        ("v", "x", 0.9, 25.0, 35.0),
        ("v", "x", 0.8, 0.0, 10.0),
        ("v", "x", 0.7, 30.0, 40.0),
        ("v", "x", 0.6, 22.0, 28.0),
    )
    anet, kit = both(gt, p, [0.5])
    assert kit[0, 0] == 1.0
    assert anet[0, 0] == 0.5
    # Without the Ambiguous segment the kit counts p_amb as a FP first: precision 1/2 at recall 1 -> 0.5.
    _, kit_no_amb = both([rec("v", [(0.0, 10.0, "x")])], p, [0.5])
    assert kit_no_amb[0, 0] == 0.5


def test_ambiguous_never_drops_a_true_positive():
    # The TP [20,30] overlaps the Ambiguous [25,27] and stays a TP; AP 1 under both protocols.
    gt = [rec("v", [(20.0, 30.0, "x")], ambiguous=[(25.0, 27.0)])]
    anet, kit = both(gt, preds(("v", "x", 0.9, 20.0, 30.0)), [0.5])
    assert anet[0, 0] == 1.0 and kit[0, 0] == 1.0


def test_videos_without_ground_truth_of_the_class_are_false_positives():
    # v2 only has class y; a perfect-looking x detection there (0.9) is a FP, then the v1 TP (0.8):
    # precision [0, .5], recall [0, 1] -> AP 0.5 (all-point and 11-point). Same for an unknown video v3.
    gt = [rec("v1", [(0.0, 10.0, "x")]), rec("v2", [(0.0, 10.0, "y")])]
    for other in ("v2", "v3"):
        p = preds((other, "x", 0.9, 0.0, 10.0), ("v1", "x", 0.8, 0.0, 10.0), ("v2", "y", 0.5, 0.0, 10.0))
        anet, kit = both(gt, p, [0.5])
        assert anet[:, 0].tolist() == [0.5, 1.0] and kit[:, 0].tolist() == [0.5, 1.0]


def test_positives_include_overlapping_ground_truth_and_class_without_predictions_scores_zero():
    # Class x has two identical GT segments: one detection matches one of them -> recall 0.5, AP 0.5.
    # Class y has GT but no detection -> AP 0 and stays in the mean: mAP = (0.5 + 0) / 2.
    gt = [rec("v", [(0.0, 10.0, "x"), (0.0, 10.0, "x"), (50.0, 60.0, "y")])]
    r = evaluation.evaluate_detections(gt, preds(("v", "x", 0.9, 0.0, 10.0)), protocol="activitynet", tiou_thresholds=[0.5])
    assert r["per_class_ap"] == {"x": [0.5], "y": [0.0]} and r["mAP"] == [0.25]
    r = evaluation.evaluate_detections(gt, preds(("v", "x", 0.9, 0.0, 10.0)), protocol="th14kit", tiou_thresholds=[0.5])
    # 11-point: recall 0.5 reached with precision 1 -> points 0..0.5 (6 of 11) -> 6/11.
    assert r["per_class_ap"]["x"] == [pytest.approx(6 / 11, abs=1e-15)] and r["per_class_ap"]["y"] == [0.0]


def test_tied_scores_activitynet_input_order_kit_true_positives_first():
    # Equal scores. ActivityNet: the earlier prediction ranks first; FP, TP -> precision [0, .5] at
    # recall [0, 1] -> AP 0.5 (the official unstable sort could give TP, FP -> 1.0 depending on the numpy
    # build). Kit: TPs rank before FPs of equal confidence whatever the input order -> TP, FP -> AP 1.
    gt = [rec("v", [(0.0, 10.0, "x")])]
    p = preds(("v", "x", 0.5, 50.0, 60.0), ("v", "x", 0.5, 0.0, 10.0))
    anet, kit = both(gt, p, [0.5])
    assert anet[0, 0] == 0.5 and kit[0, 0] == 1.0
    p = preds(("v", "x", 0.5, 0.0, 10.0), ("v", "x", 0.5, 50.0, 60.0))
    anet, kit = both(gt, p, [0.5])
    assert anet[0, 0] == 1.0 and kit[0, 0] == 1.0


def test_kit_tie_across_videos_true_positive_before_false_positive():
    # GT x: a=[0,10], b=[0,10] (npos 2). Detections in input order:
    #   d1 a 0.9 [0,10] (overlap 1), d2 a 0.5 [50,60] (overlap 0, FP), d3 b 0.5 [0,8] (overlap 0.8).
    # Threshold 0.5: d1, d3 TP, d2 FP; d2 and d3 tie at 0.5.
    #   2014 kit (TPs first among ties): TP, TP, FP -> precision [1, 1, 2/3], recall [.5, 1, 1]
    #   -> max precision at recall >= r is 1 for all 11 points -> AP 1.
    #   (Ordering ties by video name instead, a < b: TP, FP, TP -> precision [1, .5, 2/3], recall
    #   [.5, .5, 1] -> points 0..0.5 (6) give 1, points 0.6..1 (5) give 2/3 -> (6 + 10/3)/11 = 28/33.)
    #   ActivityNet (input order): TP, FP, TP -> all-point .5*1 + .5*(2/3) = 5/6.
    # Threshold 0.9: d3 (0.8) is a FP too: TP, FP, FP in either order -> recall .5 with precision 1
    #   -> kit 6/11 (points 0..0.5), ActivityNet .5*1 = 0.5.
    gt = [rec("a", [(0.0, 10.0, "x")]), rec("b", [(0.0, 10.0, "x")])]
    p = preds(("a", "x", 0.9, 0.0, 10.0), ("a", "x", 0.5, 50.0, 60.0), ("b", "x", 0.5, 0.0, 8.0))
    anet, kit = both(gt, p, [0.5, 0.9])
    assert kit[0, 0] == 1.0 and kit[0, 0] != pytest.approx(28 / 33)
    assert kit[0, 1] == pytest.approx(6 / 11, abs=1e-15)
    assert anet[0, 0] == pytest.approx(5 / 6, abs=1e-15) and anet[0, 1] == 0.5
    # Same with the video names swapped (the FP's video now sorts last): the kit AP does not change.
    gt2 = [rec("b", [(0.0, 10.0, "x")]), rec("a", [(0.0, 10.0, "x")])]
    p2 = preds(("b", "x", 0.9, 0.0, 10.0), ("b", "x", 0.5, 50.0, 60.0), ("a", "x", 0.5, 0.0, 8.0))
    _, kit2 = both(gt2, p2, [0.5, 0.9])
    np.testing.assert_array_equal(kit2, kit)


# ---------------------------------------------------------------------------------------------- bad input


def test_empty_prediction_set_gives_zero_and_warning():
    gt = [rec("v", [(0.0, 10.0, "x")])]
    for protocol in evaluation.PROTOCOLS:
        r = evaluation.evaluate_detections(gt, {"results": {}}, protocol=protocol, tiou_thresholds=[0.3, 0.5])
        assert r["mAP"] == [0.0, 0.0] and r["per_class_ap"] == {"x": [0.0, 0.0]}
        assert any("no predictions" in w for w in r["warnings"])
        assert "warning: predictions: no predictions" in report.format_table(r)


def test_ground_truth_videos_without_predictions_are_counted():
    # Predictions for 1 of 3 annotated videos (the fourth has only Ambiguous segments and does not count):
    # the others' segments are misses, and the output says so.
    gt = [rec("a", [(0.0, 10.0, "x")]), rec("b", [(0.0, 5.0, "x")]), rec("c", [(1.0, 2.0, "y")]),
          rec("d", [], ambiguous=[(0.0, 1.0)])]
    r = evaluation.evaluate_detections(gt, preds(("a", "x", 0.9, 0.0, 10.0)), tiou_thresholds=[0.5])
    assert r["num_videos_without_predictions"] == 2
    assert any("2 of the 3 ground-truth videos with actions have no predictions (e.g. b)" in w for w in r["warnings"])
    # x: 1 of 2 segments found at precision 1 -> AP 0.5; y: 0.
    assert r["per_class_ap"] == {"x": [0.5], "y": [0.0]}
    full = evaluation.evaluate_detections(gt, preds(("a", "x", 0.9, 0.0, 10.0), ("b", "x", 0.8, 0.0, 5.0),
                                                    ("c", "y", 0.7, 1.0, 2.0)), tiou_thresholds=[0.5])
    assert full["num_videos_without_predictions"] == 0 and full["warnings"] == []


def test_unknown_labels_error_by_default_and_false_positives_with_flag():
    gt = [rec("v", [(0.0, 10.0, "x")])]
    p = preds(("v", "zzz", 0.9, 0.0, 10.0), ("v", "x", 0.8, 0.0, 10.0))
    with pytest.raises(StpnError, match="absent from the ground truth \\('zzz'\\).*--unknown_labels_as_fp"):
        evaluation.evaluate_detections(gt, p, tiou_thresholds=[0.5])
    r = evaluation.evaluate_detections(gt, p, tiou_thresholds=[0.5], unknown_labels_as_fp=True)
    # The unknown label is a FP of an unscored class; class x keeps AP 1.
    assert r["per_class_ap"] == {"x": [1.0]} and r["num_predictions"] == 2
    assert any("absent from the ground truth" in w for w in r["warnings"])


@pytest.mark.parametrize(
    "det,message",
    [
        ({"label": "x", "score": float("nan"), "segment": [0, 1]}, "video 'v', detection 0: score is nan"),
        ({"label": "x", "score": float("inf"), "segment": [0, 1]}, "score is inf"),
        ({"label": "x", "score": 0.5, "segment": [3, 1]}, "segment start 3.0 is after its end 1.0"),
        ({"label": "x", "score": 0.5, "segment": [-3.0, 2.0]},
         r"video 'v', detection 0: segment \[-3, 2\] starts before 0"),
        ({"label": "x", "score": 0.5, "segment": [float("nan"), 1]}, "time must be finite"),
        ({"label": "x", "segment": [0, 1]}, "missing field 'score'"),
        ({"score": 0.5, "segment": [0, 1]}, "missing field 'label'"),
        ({"label": "x", "score": "high", "segment": [0, 1]}, "'score' must be a number"),
    ],
)
def test_bad_detections(det, message):
    gt = [rec("v", [(0.0, 10.0, "x")])]
    with pytest.raises(StpnError, match=message):
        evaluation.evaluate_detections(gt, {"results": {"v": [det]}})


def test_bad_prediction_files(tmp_path):
    gt_path = str(tmp_path / "gt.json")
    A.write_activitynet_json([rec("v", [(0.0, 10.0, "x")])], gt_path)
    cases = {
        "broken.json": ('{"results": {"v": [', "broken.json: malformed JSON at line 1"),
        "nores.json": ('{"version": "1"}', "nores.json: missing 'results'"),
        "nan.json": (
            '{"results": {"v": [{"label": "x", "score": NaN, "segment": [0, 1]}]}}',
            "nan.json: video 'v', detection 0: score is nan",
        ),
        "dets.txt": ("v 0.0 1.0 7\n", "dets.txt: line 1: expected 'video start end class_id confidence'"),
    }
    det_txt = os.path.join(KIT, "det.txt")
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(StpnError, match=message):
            evaluation.run_evaluate(ground_truth=gt_path, predictions=str(tmp_path / name), det_txt=det_txt, out=io.StringIO())
    (tmp_path / "early.txt").write_text("v 2.0 3.0 7 0.5\nv -3.0 2.0 7 0.5\n")
    with pytest.raises(StpnError, match=r"early.txt: line 2 \(video v\): segment \[-3, 2\] starts before 0"):
        evaluation.run_evaluate(ground_truth=gt_path, predictions=str(tmp_path / "early.txt"), det_txt=det_txt,
                                out=io.StringIO())
    (tmp_path / "ids.txt").write_text("v 0.0 1.0 8 0.5\n")
    with pytest.raises(StpnError, match="class id 8 is not in det.txt"):
        formats.read_toolkit_results(str(tmp_path / "ids.txt"), A.read_ucf101_ids(det_txt))
    (tmp_path / "nanconf.txt").write_text("v 0.0 1.0 7 nan\n")
    with pytest.raises(StpnError, match="confidence is nan"):
        formats.read_toolkit_results(str(tmp_path / "nanconf.txt"), A.read_ucf101_ids(det_txt))
    with pytest.raises(StpnError, match="pass --det_txt"):
        formats.load_predictions(str(tmp_path / "ids.txt"))


def test_toolkit_results_strip_video_file_suffix(tmp_path):
    # The kit strips the video file suffix from result names; .mpeg, .mp4, .avi in any case go, other
    # suffixes and inner dots stay. UCF101 id 7 is BaseballPitch in det.txt.
    det_txt = os.path.join(KIT, "det.txt")
    names = ["v1.mpeg", "v2.MP4", "v3.Avi", "v4", "v5.mkv", "v6.mpeg.bak", "v7.mp4.mp4"]
    txt = tmp_path / "res.txt"
    txt.write_text("".join(f"{n} 0.0 10.0 7 0.{k + 1}\n" for k, n in enumerate(names)))
    res = formats.read_toolkit_results(str(txt), A.read_ucf101_ids(det_txt))["results"]
    assert list(res) == ["v1", "v2", "v3", "v4", "v5.mkv", "v6.mpeg.bak", "v7.mp4"]
    assert res["v2"] == [{"label": "BaseballPitch", "score": 0.2, "segment": [0.0, 10.0]}]
    # End to end: a suffixed name matches its ground truth video (AP 1 instead of a FP and AP 0).
    gt_path = str(tmp_path / "gt.json")
    A.write_activitynet_json([rec("video_test_0000004", [(0.0, 10.0, "BaseballPitch")])], gt_path)
    (tmp_path / "one.txt").write_text("video_test_0000004.mpeg 0.0 10.0 7 0.9\n")
    for protocol in evaluation.PROTOCOLS:
        r = evaluation.run_evaluate(
            ground_truth=gt_path, predictions=str(tmp_path / "one.txt"), protocol=protocol,
            tiou_thresholds=[0.5], det_txt=det_txt, out=io.StringIO(),
        )
        assert r[0]["mAP"] == [1.0] and r[0]["warnings"] == []


def test_ground_truth_subset_rules(tmp_path):
    with pytest.raises(StpnError, match="holds subsets \\['test', 'train'\\]; choose one with --subset"):
        ground_truth.load_ground_truth(os.path.join(ROOT, "basnet", "gt.json"))
    assert len(ground_truth.load_ground_truth(os.path.join(ROOT, "basnet", "gt.json"), "test")) == 210
    assert len(ground_truth.load_ground_truth(KIT)) == 213
    assert len(ground_truth.load_ground_truth(KIT, "val")) == 200
    # One rule for subset names: spelling variants, and for the toolkit folder the dataset split "train"
    # (THUMOS14 trains on its validation videos); `stpn:` names the shipped copy.
    assert len(ground_truth.load_ground_truth(KIT, "train")) == len(ground_truth.load_ground_truth(KIT, "validation"))
    assert len(ground_truth.load_ground_truth("stpn:thumos14/basnet/gt.json", "training")) == 200
    assert len(ground_truth.load_ground_truth(os.path.join(ROOT, "basnet", "gt.json"), "testing")) == 210
    with pytest.raises(StpnError, match="no videos in subset 'validation'; subsets present: \\['test', 'train'\\]"):
        ground_truth.load_ground_truth(os.path.join(ROOT, "basnet", "gt.json"), "validation")
    with pytest.raises(StpnError, match="unknown THUMOS14 subset 'dev'"):
        ground_truth.load_ground_truth(KIT, "dev")
    with pytest.raises(StpnError, match="tIoU thresholds"):
        evaluation.evaluate_detections([rec("v", [(0.0, 1.0, "x")])], {}, tiou_thresholds=[1.5])


# ---------------------------------------------------------------------------------------------- end to end


def test_perfect_detections_on_real_thumos14_toolkit_folder(tmp_path):
    # Every test ground truth segment submitted as a detection (distinct scores) scores AP 1 at every
    # threshold in both protocols; goes through the toolkit txt writer and reader (UCF101 ids).
    records = A.read_thumos14_toolkit(KIT, "test")
    results, k = {}, 0
    for r in records:
        for s in r.segments:
            k += 1
            det = {"label": s.label, "score": 1.0 - k * 1e-5, "segment": [s.start, s.end]}
            results.setdefault(r.video_id, []).append(det)
    txt = str(tmp_path / "results.txt")
    assert formats.write_toolkit_results({"results": results}, txt, A.read_ucf101_ids(os.path.join(KIT, "det.txt"))) == 3358
    # First video video_test_0000004, first segment CricketBowling 0.2-1.1 (UCF101 id 23 in det.txt).
    assert open(txt).readline().split() == ["video_test_0000004", "0.2", "1.1", "23", "0.99999"]
    out = io.StringIO()
    json_out = str(tmp_path / "eval.json")
    res = evaluation.run_evaluate(
        ground_truth=KIT, predictions=txt, subset="test", protocol="both", tiou_thresholds=None,
        json_out=json_out, out=out,
    )
    assert [r["protocol"] for r in res] == ["activitynet", "th14kit"]
    for r in res:
        assert r["mAP"] == [1.0] * 9 and len(r["per_class_ap"]) == 20
        assert r["num_videos"] == 213 and r["num_ground_truth"] == 3358
    assert res[0]["tiou_thresholds"] == np.linspace(0.1, 0.9, 9).tolist()
    assert res[1]["tiou_thresholds"] == th14kit.matlab_colon(0.1, 0.1, 0.9).tolist()
    written = json.load(open(json_out))
    assert isinstance(written, list) and len(written) == 2
    for key in ("protocol", "tiou_thresholds", "mAP", "average_mAP", "per_class_ap"):
        assert key in written[0]
    assert written[0]["average_mAP_ranges"] == {"0.1:0.5": 1.0, "0.1:0.7": 1.0, "0.1:0.9": 1.0}
    text = out.getvalue()
    assert "ActivityNet protocol" in text and "THUMOS14 toolkit protocol" in text and "VolleyballSpiking" in text
    assert sorted(os.listdir(tmp_path)) == ["eval.json", "results.txt"]


def test_run_evaluate_json_ground_truth_single_protocol(tmp_path):
    # Two classes, ActivityNet JSON in and out; x is found (AP 1), y is missed (AP 0) -> mAP 0.5.
    gt_path, pred_path, out_path = (str(tmp_path / n) for n in ("gt.json", "pred.json", "out.json"))
    A.write_activitynet_json([rec("v", [(0.0, 10.0, "x"), (20.0, 30.0, "y")])], gt_path)
    with open(pred_path, "w") as f:
        json.dump(preds(("v", "x", 0.9, 1.0, 10.0)), f)
    res = evaluation.run_evaluate(
        ground_truth=gt_path, predictions=pred_path, tiou_thresholds=[0.5, 0.75], json_out=out_path, out=io.StringIO()
    )
    written = json.load(open(out_path))
    assert written["protocol"] == "activitynet" and written["mAP"] == [0.5, 0.5] and written["average_mAP"] == 0.5
    assert written["per_class_ap"] == {"x": [1.0, 1.0], "y": [0.0, 0.0]} and res[0] == written


def test_parse_tiou_thresholds():
    assert thresholds.parse_tiou_thresholds(None) is None and thresholds.parse_tiou_thresholds("") is None
    assert thresholds.parse_tiou_thresholds("thumos")[2] == 0.30000000000000004
    assert thresholds.parse_tiou_thresholds("activitynet") == np.linspace(0.5, 0.95, 10).tolist()
    assert thresholds.parse_tiou_thresholds("0.1, 0.3,0.5") == [0.1, 0.3, 0.5]
    with pytest.raises(StpnError, match="--tiou_thresholds"):
        thresholds.parse_tiou_thresholds("0.1;0.5")
    with pytest.raises(StpnError, match="in \\[0, 1\\]"):
        thresholds.parse_tiou_thresholds("0.5,nan")


def test_default_thresholds_by_dataset_size():
    small = [rec("v", [(0.0, 1.0, f"c{i}") for i in range(20)])]
    large = [rec("v", [(0.0, 1.0, f"c{i}") for i in range(21)])]
    assert thresholds.default_tiou_thresholds(small, "activitynet").tolist() == np.linspace(0.1, 0.9, 9).tolist()
    assert thresholds.default_tiou_thresholds(large, "th14kit").tolist() == np.linspace(0.5, 0.95, 10).tolist()
    r = evaluation.evaluate_detections(large, {}, protocol="activitynet")
    assert r["average_mAP_ranges"] == {"0.5:0.95": 0.0}


# ---------------------------------------------------------------------------------------------- properties


@st.composite
def instances(draw):
    """Small random ground truth + predictions on a coarse grid (so tIoU and score ties do occur)."""
    n_videos = draw(st.integers(1, 4))
    # 2 to 6 distinct scores per instance: coarse grids make TP / FP confidence ties common.
    n_scores = draw(st.integers(1, 5))
    labels = ["a", "b", "c"]
    t = st.integers(0, 12).map(float)
    records = []
    for v in range(n_videos):
        segs = draw(st.lists(st.tuples(t, st.integers(0, 6).map(float), st.sampled_from(labels)), max_size=5))
        amb = draw(st.lists(st.tuples(t, st.integers(0, 4).map(float)), max_size=2))
        records.append(rec(f"v{v}", [(s, s + d, l) for s, d, l in segs], [(s, s + d) for s, d in amb]))
    dets = draw(
        st.lists(
            st.tuples(
                st.integers(0, n_videos),  # n_videos = a video without ground truth
                st.sampled_from(labels + ["zz"]),
                st.integers(0, n_scores).map(lambda x: x / 5),
                t,
                st.integers(0, 6).map(float),
            ),
            max_size=25,
        )
    )
    dets = [(f"v{v}", l, c, s, s + d) for v, l, c, s, d in dets]
    # Detections near ground truth segments (edges moved by -2..2), so true positives are common too.
    gt = [(r.video_id, g) for r in records for g in r.segments]
    if gt:
        near = st.tuples(
            st.integers(0, len(gt) - 1),
            st.integers(0, n_scores).map(lambda x: x / 5),
            st.integers(-2, 2).map(float),
            st.integers(-2, 2).map(float),
        )
        for k, c, ds, de in draw(st.lists(near, max_size=8)):
            v, g = gt[k]
            start = max(0.0, g.start + ds)  # a segment cannot start before the video
            dets.append((v, g.label, c, start, max(start, g.end + de)))
        dets = draw(st.permutations(dets))
    return records, preds(*dets)


THRESHOLDS = [0.0, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.6, 0.7000000000000001, 0.9, 1.0] + list(np.linspace(0.1, 0.9, 9))


# Always-tried instance with TP / FP ties at equal confidence across videos and inside one video (at
# thresholds where the tied [0,8] detection is a TP and where it is a FP).
TIE_EXAMPLE = (
    [rec("v0", [(0.0, 10.0, "a")]), rec("v1", [(0.0, 10.0, "a"), (2.0, 6.0, "b")])],
    preds(
        ("v0", "a", 0.4, 50.0, 60.0),
        ("v1", "a", 0.4, 0.0, 8.0),
        ("v1", "a", 0.4, 30.0, 32.0),
        ("v0", "a", 0.4, 0.0, 10.0),
        ("v1", "b", 0.2, 2.0, 6.0),
        ("v2", "b", 0.2, 2.0, 6.0),
    ),
)


def _kit_tie_order_matters(data, thr):
    """Whether some kit AP changes when confidence ties are broken by input order instead.

    The offset -1e-9 * input index is far below the 0.2 score grid and keeps each video's detection
    order (descending confidence, input order on ties), so only the global tie order changes: a
    different AP means a TP and a FP of equal confidence were ranked the other way round.
    """
    offset = 1e-9 * np.arange(len(data.pred_score))
    untied = dataclasses.replace(data, pred_score=data.pred_score - offset)
    return not np.allclose(th14kit.th14kit_ap(untied, thr), th14kit.th14kit_ap(data, thr), rtol=0, atol=1e-12)


def test_tie_example_exercises_the_kit_tie_rule():
    data = matching.build_eval_data(TIE_EXAMPLE[0], TIE_EXAMPLE[1]["results"])
    assert _kit_tie_order_matters(data, THRESHOLDS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
@example(TIE_EXAMPLE)
def test_vectorized_equals_loop(instance):
    records, p = instance
    data = matching.build_eval_data(records, p["results"], unknown_labels_as_fp=True)
    # Reported by --hypothesis-show-statistics: how often the TP-before-FP tie rule changes the result.
    event(f"kit tie order matters: {_kit_tie_order_matters(data, THRESHOLDS)}")
    for fast, loop in ((activitynet.activitynet_ap, loops.activitynet_ap_loop), (th14kit.th14kit_ap, loops.th14kit_ap_loop)):
        np.testing.assert_allclose(fast(data, THRESHOLDS), loop(data, THRESHOLDS), rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_vectorized_equals_loop_continuous(seed):
    # Continuous times and scores (no ties), more detections per video than the grid test.
    rng = np.random.default_rng(seed)
    records = []
    for v in range(5):
        segs = []
        for _ in range(rng.integers(0, 6)):
            s = rng.uniform(0, 50)
            segs.append((s, s + rng.uniform(0.5, 10), "ab"[rng.integers(2)]))
        records.append(rec(f"v{v}", segs, [(s, s + 5) for s in rng.uniform(0, 50, rng.integers(0, 2))]))
    dets = []
    for _ in range(60):
        s = rng.uniform(0, 50)
        dets.append((f"v{rng.integers(6)}", "ab"[rng.integers(2)], float(rng.uniform()), s, s + rng.uniform(0.1, 12)))
    data = matching.build_eval_data(records, preds(*dets)["results"], unknown_labels_as_fp=True)
    thr = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(activitynet.activitynet_ap(data, thr), loops.activitynet_ap_loop(data, thr), rtol=0, atol=1e-12)
    np.testing.assert_allclose(th14kit.th14kit_ap(data, thr), loops.th14kit_ap_loop(data, thr), rtol=0, atol=1e-12)


def test_predictions_on_no_ground_truth_video_is_an_error(tmp_path):
    gt = [A.VideoRecord("video_a", "test", 10.0, ("Jump",), (A.Segment(1.0, 2.0, "Jump"),))]
    preds = {"results": {"video_b": [{"label": "Jump", "score": 0.9, "segment": [1.0, 2.0]}]}}
    # Typical cause: test detections evaluated against the validation subset.
    with pytest.raises(StpnError, match="none of its 1 video"):
        evaluation.evaluate_detections(gt, preds, protocol="activitynet", tiou_thresholds=[0.5])
    with pytest.raises(StpnError, match="output directory does not exist"):
        evaluation.run_evaluate(ground_truth=str(tmp_path / "gt.json"), predictions=str(tmp_path / "p.json"),
                       json_out=str(tmp_path / "missing" / "out.json"))

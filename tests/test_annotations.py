"""Annotation readers on the real THUMOS14 files shipped with the package (stpn_tf.core.resources), plus
malformed input."""

import json
import os

import numpy as np
import pytest

from stpn_tf.core import resources
from stpn_tf.artifacts import annotations as A
from stpn_tf.core.errors import StpnError

ROOT = resources.resource_path(resources.THUMOS14)
KIT = os.path.join(ROOT, "th14_evalkit_groundtruth")
REDUCED = os.path.join(ROOT, "thumos14reduced")
BASNET = os.path.join(ROOT, "basnet")


@pytest.fixture(scope="module")
def kit_test():
    return {r.video_id: r for r in A.read_thumos14_toolkit(KIT, "test")}


def test_toolkit_test_counts_and_exact_segments(kit_test):
    # 212 videos with action segments + video_test_0001292, which only has Ambiguous segments.
    assert len(kit_test) == 213
    no_labels = [v for v, r in kit_test.items() if not r.labels]
    assert no_labels == ["video_test_0001292"]
    # Ambiguous_test.txt lists 1292 three times, in this order.
    assert kit_test["video_test_0001292"].ambiguous == ((78.4, 113.2), (39.9, 47.4), (141.2, 154.1))
    # BaseballPitch_test.txt first two lines: "video_test_0000324  49.2 53.5" / "...  116.7 122.5".
    assert kit_test["video_test_0000324"].segments == (
        A.Segment(49.2, 53.5, "BaseballPitch"),
        A.Segment(116.7, 122.5, "BaseballPitch"),
    )
    # Ambiguous_test.txt starts with "video_test_0000278  0.0 1.4" and "...  95.7 97.2".
    assert kit_test["video_test_0000278"].ambiguous[:2] == ((0.0, 1.4), (95.7, 97.2))
    # Multi-class video: CricketBowling segments come before CricketShot (class order), file order within.
    r = kit_test["video_test_0000004"]
    assert r.labels == ("CricketBowling", "CricketShot")
    assert [s.label for s in r.segments] == ["CricketBowling"] * 4 + ["CricketShot"] * 3
    assert r.segments[4] == A.Segment(1.0, 1.5, "CricketShot")
    assert r.duration is None
    assert all(r.subset == "test" for r in kit_test.values())


def test_toolkit_validation_and_durations():
    val = A.read_thumos14_toolkit(KIT, "validation", durations=A.read_thumos14_durations(REDUCED))
    assert len(val) == 200
    assert all(r.duration is not None and r.duration > 0 for r in val)
    # videoname.npy entry 0 is video_validation_0000051 with duration.npy [0] = 169.794.
    assert {r.video_id: r for r in val}["video_validation_0000051"].duration == pytest.approx(169.794)


def test_toolkit_bad_subset_and_missing_folder(tmp_path):
    with pytest.raises(StpnError, match="unknown THUMOS14 subset"):
        A.read_thumos14_toolkit(KIT, "train")
    with pytest.raises(StpnError, match="not found"):
        A.read_thumos14_toolkit(str(tmp_path / "nope"))
    with pytest.raises(StpnError, match="no '<Class>_test.txt'"):
        A.read_thumos14_toolkit(str(tmp_path))


@pytest.mark.parametrize(
    "line,message",
    [
        ("video_test_1  3.0", "expected 'video_name start end'"),
        ("video_test_1  5.0 3.0", "start 5.0 is after its end 3.0"),
        ("video_test_1  nan 3.0", "must be finite"),
        ("video_test_1  abc 3.0", "expected a number"),
    ],
)
def test_toolkit_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "Diving_test.txt"
    path.write_text("video_test_0  1.0 2.0\n" + line + "\n")
    with pytest.raises(StpnError, match=message) as exc:
        A.read_thumos14_toolkit(str(tmp_path))
    assert "Diving_test.txt: line 2" in str(exc.value)


def test_durations_and_subsets_without_pickle():
    d = A.read_thumos14_durations(REDUCED)
    s = A.read_thumos14_subsets(REDUCED)
    assert len(d) == len(s) == 412
    assert sum(v == "validation" for v in s.values()) == 200
    assert sum(v == "test" for v in s.values()) == 212
    # Video 270 has annotations (up to 713.7 s in the toolkit files) beyond its 176.2 s duration.
    assert d["video_test_0000270"] == pytest.approx(176.2453514)


def test_reduced_refuses_pickle_by_default():
    with pytest.raises(StpnError) as exc:
        A.read_thumos14_reduced(REDUCED)
    msg = str(exc.value)
    assert "pickle" in msg and "run arbitrary code" in msg and "--allow_pickle" in msg
    assert "\n" not in msg


def test_reduced_with_pickle_matches_toolkit(kit_test):
    recs = A.read_thumos14_reduced(REDUCED, allow_pickle=True)
    assert len(recs) == 412
    assert sum(r.subset == "validation" for r in recs) == 200
    test = {r.video_id: r for r in recs if r.subset == "test"}
    assert len(test) == 212
    assert recs[0].video_id == "video_validation_0000051"
    assert recs[0].duration == pytest.approx(169.794)
    assert recs[0].segments[0] == A.Segment(67.5, 75.9, "Billiards")
    # Same segments as the toolkit files (order may differ for multi-class videos).
    for vid, r in test.items():
        assert set(r.segments) == set(kit_test[vid].segments), vid
        assert r.labels == kit_test[vid].labels
    # The folder's own Ambiguous_test.txt is attached.
    assert test["video_test_0000278"].ambiguous[:2] == ((0.0, 1.4), (95.7, 97.2))


def test_basnet_gt_json_string_segments(kit_test):
    recs = A.read_activitynet_json(os.path.join(BASNET, "gt.json"))
    assert len(recs) == 410
    test = A.read_activitynet_json(os.path.join(BASNET, "gt.json"), subset="test")
    assert len(test) == 210
    assert all(r.duration is None for r in recs)
    by_id = {r.video_id: r for r in test}
    # gt.json: "video_test_0000896": [["18.6", "24.8"], HighJump], ... (strings parsed to floats).
    assert by_id["video_test_0000896"].segments[0] == A.Segment(18.6, 24.8, "HighJump")
    # BaS-Net excludes 270 and 1496 (and 1292 has no action); everything else equals the toolkit.
    assert set(kit_test) - set(by_id) == {"video_test_0000270", "video_test_0001496", "video_test_0001292"}
    for vid, r in by_id.items():
        assert set(r.segments) == set(kit_test[vid].segments), vid
    train_ids = A.read_split_file(os.path.join(BASNET, "split_train.txt"))
    assert len(train_ids) == 200 and train_ids[0].startswith("video_validation_")
    assert {r.video_id for r in recs if r.subset == "train"} == set(train_ids)


def test_activitynet_json_round_trip(tmp_path, kit_test):
    recs = [kit_test["video_test_0000004"], kit_test["video_test_0001292"]]
    recs.append(A.make_record("v3", "validation", 12.5, [A.Segment(0.0, 2.5, "x")]))
    path = str(tmp_path / "gt.json")
    A.write_activitynet_json(recs, path)
    assert A.read_activitynet_json(path) == recs
    assert A.read_activitynet_json(path, subset="validation") == recs[2:]
    assert os.listdir(tmp_path) == ["gt.json"]  # no temp file left behind
    with pytest.raises(StpnError, match="no videos in subset 'training'"):
        A.read_activitynet_json(path, subset="training")


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "malformed JSON at line 1"),
        ('{"results": {}}', "missing 'database'"),
        ('{"database": {"v1": {"annotations": []}}}', "video 'v1': missing field 'subset'"),
        ('{"database": {"v1": {"subset": "test"}}}', "video 'v1': missing or non-list field 'annotations'"),
        (
            '{"database": {"v1": {"subset": "test", "annotations": [{"segment": [1, 2]}]}}}',
            "video 'v1', annotation 0: expected an object with 'segment' and 'label'",
        ),
        (
            '{"database": {"v1": {"subset": "test", "annotations": [{"segment": [3, 2], "label": "a"}]}}}',
            "video 'v1', annotation 0: segment start 3.0 is after its end 2.0",
        ),
        (
            '{"database": {"v1": {"subset": "test", "annotations": [{"segment": ["NaN", 2], "label": "a"}]}}}',
            "annotation 0: time must be finite",
        ),
        (
            '{"database": {"v1": {"subset": "test", "annotations": [{"segment": [1], "label": "a"}]}}}',
            "'segment' must be \\[start, end\\]",
        ),
    ],
)
def test_activitynet_json_malformed(tmp_path, content, message):
    path = tmp_path / "gt.json"
    path.write_text(content)
    with pytest.raises(StpnError, match=message) as exc:
        A.read_activitynet_json(str(path))
    assert str(path) in str(exc.value)


def test_missing_file_is_stpn_error(tmp_path):
    with pytest.raises(StpnError, match="file not found"):
        A.read_activitynet_json(str(tmp_path / "missing.json"))


def test_ucf101_ids_and_class_list():
    ids = A.read_ucf101_ids(os.path.join(KIT, "det.txt"))
    assert len(ids) == 20
    assert ids["BaseballPitch"] == 7 and ids["BasketballDunk"] == 9 and ids["VolleyballSpiking"] == 97
    assert tuple(ids) == A.THUMOS14_CLASSES  # det.txt order is the alphabetical class order
    names = [line.split()[1] for line in open(os.path.join(KIT, "detclasslist.txt")) if line.strip()]
    assert tuple(names) == A.THUMOS14_CLASSES
    classlist = np.load(os.path.join(REDUCED, "classlist.npy"))
    assert tuple(c.decode() for c in classlist) == A.THUMOS14_CLASSES


def test_ucf101_ids_malformed(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text("7 BaseballPitch\nnine BasketballDunk\n")
    with pytest.raises(StpnError, match="det.txt: line 2"):
        A.read_ucf101_ids(str(path))

"""build-dataset on tiny files written in each real release layout, and every bad input of issue 5.

The tiny releases are written by tests/helpers/releases.py (the end-to-end CLI tests build from them too).
"""

from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.artifacts import annotations as ann
from stpn_tf.artifacts.shards import list_shards
from stpn_tf.data.records.decoder import parse_example
from stpn_tf.data.records.reader import corrupt_record_errors, read_records, tfrecord_dataset
from stpn_tf.data.build import THUMOS14_EXCLUDED_FOR_210, run_build_dataset
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts.dataset_dir import GROUND_TRUTH_FILE, METADATA_FILE, read_dataset_info
from tests.helpers.releases import (ACTIVITYNET_CLASSES, REDUCED, RELEASE_WRITERS, build_tiny_dataset,
                                    pick_thumos14_videos, write_activitynet_release, write_basnet_release,
                                    write_thumos14_reduced_release, write_toolkit_extract_release)


def metadata(path):
    """dataset.json as the writer's JSON (read and checked by read_dataset_info)."""
    return read_dataset_info(str(path)).to_json()


@pytest.mark.parametrize("release", sorted(RELEASE_WRITERS))
def test_build_tiny_dataset_for_end_to_end(tmp_path, release):
    out = build_tiny_dataset(str(tmp_path), release)
    meta = metadata(out)
    for split in ("train", "test"):
        shards = list_shards(out, split)
        assert sum(1 for _ in read_records(shards)) == meta["splits"][split]["num_videos"] > 0
        # Every file's record count is recorded: what a TFRecordDataset of it reads (by_stream: each stream).
        recorded = meta["splits"][split]["shard_records"]
        names = sorted(os.path.basename(s) for s in shards)
        assert sorted(recorded) == names == sorted(meta["splits"][split]["shards"])
        for shard in shards:
            assert recorded[os.path.basename(shard)] == sum(1 for _ in tf.data.TFRecordDataset(shard))
    assert meta["feature_dim"] == 8


def build(out, **kwargs):
    kwargs.setdefault("progress", False)
    return run_build_dataset(out=str(out), **kwargs)


def _parse_all(dataset_dir, split, num_classes, feature_dim):
    shards = list_shards(str(dataset_dir), split)
    out = {}
    for record in read_records(shards):
        ex = parse_example(tf.constant(record), num_classes=num_classes, feature_dim=feature_dim)
        out[ex["video/id"].numpy().decode()] = {k: v.numpy() for k, v in ex.items()}
    return out


def _tree_bytes(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


# --------------------------------------------------------------------------------------------------
# Each layout builds.


def test_thumos14_reduced_build(tmp_path, capsys):
    release = write_thumos14_reduced_release(str(tmp_path / "rel"), indices=pick_thumos14_videos(3, 2))
    out = tmp_path / "ds"
    assert build(out, layout="thumos14_reduced", allow_pickle=True, **release) == 0
    summary = capsys.readouterr().out
    assert "train: 3 videos" in summary and "test: 2 videos" in summary

    meta = metadata(str(out))
    assert meta["classes"] == list(ann.THUMOS14_CLASSES)
    assert (meta["feature_dim"], meta["fps"], meta["stride_frames"]) == (8, 25.0, 16)
    assert {s: v["num_videos"] for s, v in meta["splits"].items()} == {"train": 3, "test": 2}
    joint_entry = next(s for s in meta["sources"] if s["path"].endswith("JOINTFeatures.npy"))
    with open(release["features"], "rb") as f:
        data = f.read()
    assert joint_entry["sha256"] == hashlib.sha256(data).hexdigest() and joint_entry["bytes"] == len(data)

    # Features round trip: RGB is the first half of the joint array, flow the second.
    names = [n.decode() for n in np.load(os.path.join(release["annotations"], "videoname.npy"))]
    joint = np.load(release["features"], allow_pickle=True)
    train = _parse_all(out, "train", 20, 8)
    vid = names[0]
    np.testing.assert_array_equal(train[vid]["video/rgb"], joint[0][:, :8])
    np.testing.assert_array_equal(train[vid]["video/flow"], joint[0][:, 8:])
    assert train[vid]["video/seconds_per_snippet"] == pytest.approx(0.64)
    gt = {r.video_id: r for r in ann.read_activitynet_json(str(out / "ground_truth.json"))}
    assert set(gt) == set(names)
    expected = np.zeros(20)
    expected[[ann.THUMOS14_CLASSES.index(c) for c in gt[vid].labels]] = 1
    np.testing.assert_array_equal(train[vid]["video/labels"], expected)
    durations = np.load(os.path.join(release["annotations"], "duration.npy"))
    assert gt[vid].duration == pytest.approx(durations[0, 0]) and gt[vid].subset == "train"


def test_thumos14_full_splits_200_212_and_210(tmp_path, capsys):
    # All 412 real annotated videos with 2-snippet, D=2 features: the protocol's split sizes.
    release = write_thumos14_reduced_release(str(tmp_path / "rel"), feature_dim=2, max_snippets=2)
    build(tmp_path / "212", layout="thumos14_reduced", allow_pickle=True, **release)
    meta = metadata(str(tmp_path / "212"))
    assert {s: v["num_videos"] for s, v in meta["splits"].items()} == {"train": 200, "test": 212}
    build(tmp_path / "210", layout="thumos14_reduced", allow_pickle=True, thumos14_210=True, **release)
    meta = metadata(str(tmp_path / "210"))
    assert {s: v["num_videos"] for s, v in meta["splits"].items()} == {"train": 200, "test": 210}
    assert meta["options"]["exclude_videos"] == sorted(THUMOS14_EXCLUDED_FOR_210)
    gt_ids = {r.video_id for r in ann.read_activitynet_json(str(tmp_path / "210" / "ground_truth.json"))}
    assert not gt_ids & set(THUMOS14_EXCLUDED_FOR_210) and len(gt_ids) == 410
    assert "note: 2 videos excluded on request" in capsys.readouterr().out


def test_basnet_per_video_npy_build_with_durations(tmp_path):
    release = write_basnet_release(str(tmp_path / "rel"))
    out = tmp_path / "ds"
    build(out, layout="thumos14_npy", **release)
    meta = metadata(str(out))
    assert {s: v["num_videos"] for s, v in meta["splits"].items()} == {"train": 3, "test": 3}
    assert meta["sources"][-1]["files"] == 12  # 6 videos x (rgb, flow), one folder entry
    gt = ann.read_activitynet_json(str(out / "ground_truth.json"))
    durations = ann.read_thumos14_durations(REDUCED)
    for r in gt:  # gt.json has none: they come from the durations arrays
        assert r.duration == pytest.approx(durations[r.video_id])


def test_toolkit_and_extract_layout_uses_meta_and_skips_ambiguous_only(tmp_path, capsys):
    release = write_toolkit_extract_release(str(tmp_path / "rel"))
    build(tmp_path / "ds", layout="thumos14_npy", **release)
    meta = metadata(str(tmp_path / "ds"))
    assert {s: v["num_videos"] for s, v in meta["splits"].items()} == {"train": 3, "test": 3}
    text = capsys.readouterr().out
    assert "annotated videos without action segments (skipped" in text
    assert "annotated videos without features (skipped)" in text  # toolkit lists 410 more videos
    gt = {r.video_id: r for r in ann.read_activitynet_json(str(tmp_path / "ds" / "ground_truth.json"))}
    some = next(iter(gt.values()))
    with open(os.path.join(release["features"], "train" if some.subset == "train" else "test", "meta",
                           some.video_id + ".json")) as f:
        assert some.duration == json.load(f)["duration"]
    build(tmp_path / "ds2", layout="thumos14_npy", keep_unlabeled=True, **release)
    test = _parse_all(tmp_path / "ds2", "test", 20, 8)
    np.testing.assert_array_equal(test["video_test_0001292"]["video/labels"], np.zeros(20))
    gt2 = {r.video_id: r for r in ann.read_activitynet_json(str(tmp_path / "ds2" / "ground_truth.json"))}
    assert len(gt2["video_test_0001292"].ambiguous) == 3


@pytest.mark.parametrize("joint", [False, True])
def test_activitynet_h5_build(tmp_path, capsys, joint):
    release = write_activitynet_release(str(tmp_path / "rel"), joint=joint)
    build(tmp_path / "ds", layout="activitynet_h5", **release)
    meta = metadata(str(tmp_path / "ds"))
    assert meta["classes"] == sorted(ACTIVITYNET_CLASSES)  # the taxonomy's leaves
    # 9 videos: 3 training -> train, 3 validation -> test, 3 testing not built.
    assert {s: v["num_videos"] for s, v in meta["splits"].items()} == {"train": 3, "test": 3}
    assert "note: 3 videos of subset 'testing'" in capsys.readouterr().out
    with h5py.File(release["features"]) as f:
        expected_rgb = f["v_A00xYz_k0Q"]["rgb"][()] if not joint else f["v_A00xYz_k0Q"][()][:, :8]
    train = _parse_all(tmp_path / "ds", "train", 3, 8)
    np.testing.assert_array_equal(train["A00xYz_k0Q"]["video/rgb"], expected_rgb)


def test_snippet_time_from_duration(tmp_path):
    release = write_activitynet_release(str(tmp_path / "rel"))
    build(tmp_path / "ds", layout="activitynet_h5", snippet_time="duration", **release)
    train = _parse_all(tmp_path / "ds", "train", 3, 8)
    v = train["A00xYz_k0Q"]
    # 20 s video with int(20 / 0.64) = 31 snippets: each covers 20 / 31 s.
    assert int(v["video/num_snippets"]) == 31
    assert v["video/seconds_per_snippet"] == pytest.approx(20.0 / 31)


# --------------------------------------------------------------------------------------------------
# Atomic and idempotent.


def test_rebuild_is_byte_identical_and_replaces_old_shards(tmp_path):
    release = write_thumos14_reduced_release(str(tmp_path / "rel"), indices=pick_thumos14_videos(4, 4))
    out = tmp_path / "ds"
    build(out, layout="thumos14_reduced", allow_pickle=True, **release)
    first = _tree_bytes(out)
    build(out, layout="thumos14_reduced", allow_pickle=True, **release)
    assert _tree_bytes(out) == first
    videos = _parse_all(out, "train", 20, 8)
    build(out, layout="thumos14_reduced", allow_pickle=True, num_shards=1, **release)
    assert sorted(os.listdir(out)) == ["dataset.json", "ground_truth.json", "test-flow-00000-of-00001.tfrecord",
                                       "test-rgb-00000-of-00001.tfrecord", "train-flow-00000-of-00001.tfrecord",
                                       "train-rgb-00000-of-00001.tfrecord"]
    # Rebuilt in the combined storage: the by-stream shards go, the videos read back the same.
    build(out, layout="thumos14_reduced", allow_pickle=True, num_shards=1, storage="combined", **release)
    assert sorted(os.listdir(out)) == ["dataset.json", "ground_truth.json", "test-00000-of-00001.tfrecord",
                                       "train-00000-of-00001.tfrecord"]
    assert metadata(out)["splits"]["train"]["shards"] == ["train-00000-of-00001.tfrecord"]
    combined = _parse_all(out, "train", 20, 8)
    assert sorted(combined) == sorted(videos)
    for vid, fields in videos.items():
        for key, value in fields.items():
            np.testing.assert_array_equal(combined[vid][key], value, err_msg=f"{vid} {key}")


def test_default_build_stores_each_stream_in_its_own_shards(tmp_path):
    release = write_thumos14_reduced_release(str(tmp_path / "rel"), indices=pick_thumos14_videos(3, 2))
    out = tmp_path / "ds"
    build(out, layout="thumos14_reduced", allow_pickle=True, num_shards=2, **release)
    meta = metadata(out)
    assert meta["options"]["storage"] == "by_stream"
    for split in ("train", "test"):
        names = [f"{split}-{s}-0000{i}-of-00002.tfrecord" for s in ("rgb", "flow") for i in range(2)]
        assert meta["splits"][split]["shards"] == names
        assert [os.path.basename(p) for p in list_shards(str(out), split)] == names
        # An rgb record carries the metadata but not the flow features.
        record = next(iter(tf.data.TFRecordDataset(os.path.join(str(out), names[0])))).numpy()
        keys = set(tf.train.Example.FromString(record).features.feature)
        assert "video/rgb" in keys and "video/labels" in keys and "video/flow" not in keys
    assert len(_parse_all(out, "train", 20, 8)) == meta["splits"]["train"]["num_videos"] == 3
    with pytest.raises(StpnError, match="storage must be one of by_stream, combined, got 'split'"):
        build(tmp_path / "ds2", layout="thumos14_reduced", allow_pickle=True, storage="split", **release)
    assert not os.path.exists(tmp_path / "ds2")


def test_failed_build_leaves_previous_dataset_untouched(tmp_path):
    root = str(tmp_path / "rel")
    release = write_thumos14_reduced_release(root, indices=pick_thumos14_videos(3, 3))
    out = tmp_path / "ds"
    build(out, layout="thumos14_reduced", allow_pickle=True, **release)
    before = _tree_bytes(out)
    joint = np.load(release["features"], allow_pickle=True)
    joint[4] = joint[4].copy()
    joint[4][1, 2] = np.nan  # the 5th video fails after 4 were written to temporaries
    np.save(release["features"], joint, allow_pickle=True)
    with pytest.raises(StpnError, match="NaN"):
        build(out, layout="thumos14_reduced", allow_pickle=True, **release)
    assert _tree_bytes(out) == before  # no temporaries, old shards and metadata intact


def test_build_killed_after_renaming_does_not_look_complete(tmp_path, monkeypatch):
    release = write_thumos14_reduced_release(str(tmp_path / "rel"), indices=pick_thumos14_videos(2, 2))
    out = tmp_path / "ds"
    build(out, layout="thumos14_reduced", allow_pickle=True, **release)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between renaming shards and writing metadata

    monkeypatch.setattr(ann, "write_activitynet_json", killed)
    with pytest.raises(KeyboardInterrupt):
        build(out, layout="thumos14_reduced", allow_pickle=True, **release)
    with pytest.raises(StpnError, match="dataset metadata not found"):
        metadata(str(out))


# --------------------------------------------------------------------------------------------------
# Bad input, one test each (issue 5, item 4).


def _one_line_error(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_pickle_refused_without_opt_in(tmp_path):
    release = write_thumos14_reduced_release(str(tmp_path / "rel"), indices=pick_thumos14_videos(1, 1))
    with pytest.raises(StpnError, match="only pickle can load.*--allow_pickle") as e:
        build(tmp_path / "ds", layout="thumos14_reduced", **release)
    _one_line_error(e)
    assert not (tmp_path / "ds").exists()


def test_missing_features_skipped_and_counted_or_strict_error(tmp_path, capsys):
    release = write_basnet_release(str(tmp_path / "rel"))
    victim = sorted(os.listdir(os.path.join(release["features"], "test", "rgb")))[0][:-4]
    for stream in ("rgb", "flow"):
        os.remove(os.path.join(release["features"], "test", stream, victim + ".npy"))
    build(tmp_path / "ds", layout="thumos14_npy", **release)
    assert "WARNING: 1 annotated videos without features (skipped)" in capsys.readouterr().out
    meta = metadata(str(tmp_path / "ds"))
    assert meta["splits"]["test"]["num_videos"] == 2 and meta["warnings"] == {"no_features": 1}
    with pytest.raises(StpnError, match=f"no features for annotated video {victim} .*--strict") as e:
        build(tmp_path / "ds2", layout="thumos14_npy", strict=True, **release)
    _one_line_error(e)


def test_wrong_feature_dimension(tmp_path):
    release = write_basnet_release(str(tmp_path / "rel"))
    with pytest.raises(StpnError, match="wrong feature dimension 8 .* expected 1024 per stream") as e:
        build(tmp_path / "ds", layout="thumos14_npy", feature_dim=1024, **release)
    _one_line_error(e)
    # Inferred from the first video, then enforced on the others.
    folder = os.path.join(release["features"], "test")
    victim = sorted(os.listdir(os.path.join(folder, "rgb")))[-1]
    for stream in ("rgb", "flow"):
        np.save(os.path.join(folder, stream, victim), np.zeros((5, 6), np.float32))
    with pytest.raises(StpnError, match=f"wrong feature dimension 6 for video {victim[:-4]}, expected 8"):
        build(tmp_path / "ds", layout="thumos14_npy", **release)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(tmp_path, bad):
    release = write_basnet_release(str(tmp_path / "rel"), num_test=1)
    path = os.path.join(release["features"], "test", "flow")
    name = os.listdir(path)[0]
    arr = np.load(os.path.join(path, name))
    arr[3, 1] = bad
    np.save(os.path.join(path, name), arr)
    with pytest.raises(StpnError, match=f"flow features of video {name[:-4]} hold 1 NaN or infinite "
                                        f"value.*--exclude_videos={name[:-4]}") as e:
        build(tmp_path / "ds", layout="thumos14_npy", **release)
    _one_line_error(e)


def test_rgb_flow_length_mismatch_trimmed_or_error(tmp_path, capsys):
    release = write_basnet_release(str(tmp_path / "rel"), num_train=1, num_test=1)
    folder = os.path.join(release["features"], "train")
    name = os.listdir(os.path.join(folder, "flow"))[0]
    rgb = np.load(os.path.join(folder, "rgb", name))
    np.save(os.path.join(folder, "flow", name), np.load(os.path.join(folder, "flow", name))[:-1])
    build(tmp_path / "ds", layout="thumos14_npy", **release)
    assert "WARNING: 1 videos whose RGB and flow lengths differed" in capsys.readouterr().out
    train = _parse_all(tmp_path / "ds", "train", 20, 8)
    assert int(train[name[:-4]]["video/num_snippets"]) == len(rgb) - 1
    np.testing.assert_array_equal(train[name[:-4]]["video/rgb"], rgb[:-1])
    np.save(os.path.join(folder, "flow", name), rgb[:-3])
    with pytest.raises(StpnError, match=f"rgb has {len(rgb)} snippets but flow has {len(rgb) - 3} "
                                        r"\(gap 3 > 1\)") as e:
        build(tmp_path / "ds", layout="thumos14_npy", **release)
    _one_line_error(e)


def test_zero_length_features(tmp_path):
    release = write_basnet_release(str(tmp_path / "rel"), num_train=1, num_test=1)
    folder = os.path.join(release["features"], "test")
    name = os.listdir(os.path.join(folder, "rgb"))[0]
    for stream in ("rgb", "flow"):
        np.save(os.path.join(folder, stream, name), np.zeros((0, 8), np.float32))
    with pytest.raises(StpnError, match=f"zero-length rgb features for video {name[:-4]}") as e:
        build(tmp_path / "ds", layout="thumos14_npy", **release)
    _one_line_error(e)


def test_duplicate_video_ids(tmp_path):
    release = write_basnet_release(str(tmp_path / "rel"), num_train=1, num_test=1)
    text = open(release["annotations"]).read()
    first_key = next(iter(json.loads(text)["database"]))
    entry = json.dumps(json.loads(text)["database"][first_key])
    # Same id twice in the JSON text (json.load alone would silently keep the last).
    dup = text.replace('{"database": {', '{"database": {' + json.dumps(first_key) + ": " + entry + ", ", 1)
    with open(release["annotations"], "w") as f:
        f.write(dup)
    with pytest.raises(StpnError, match=f"gt.json: duplicate key '{first_key}'") as e:
        build(tmp_path / "ds", layout="thumos14_npy", **release)
    _one_line_error(e)

    reduced = write_thumos14_reduced_release(str(tmp_path / "red"), indices=pick_thumos14_videos(2, 0))
    names = np.load(os.path.join(reduced["annotations"], "videoname.npy"))
    names[1] = names[0]
    np.save(os.path.join(reduced["annotations"], "videoname.npy"), names)
    with pytest.raises(StpnError, match="videoname.npy: duplicate video id 'video_validation"):
        build(tmp_path / "ds", layout="thumos14_reduced", allow_pickle=True, **reduced)


def test_basnet_split_files_define_and_check_the_splits(tmp_path, capsys):
    """split_train.txt / split_test.txt beside gt.json are read and checked against its subsets."""
    release = write_basnet_release(str(tmp_path / "rel"), num_train=3, num_test=2)
    root = tmp_path / "rel"
    train_ids = (root / "split_train.txt").read_text().split()
    test_ids = (root / "split_test.txt").read_text().split()

    def build_with(train_lines, test_lines):
        (root / "split_train.txt").write_text("".join(f"{v}\n" for v in train_lines))
        (root / "split_test.txt").write_text("".join(f"{v}\n" for v in test_lines))
        return build(tmp_path / "ds", layout="thumos14_npy", **release)

    cases = [
        ((train_ids + [train_ids[0]], test_ids), f"split_train.txt: line 4: video '{train_ids[0]}' listed twice \\(also line 1\\)"),
        ((train_ids, test_ids + ["video_test_9999999"]), "split_test.txt: line 3: video 'video_test_9999999' is not in .*gt.json"),
        ((train_ids + [test_ids[0]], test_ids[1:]), f"video '{test_ids[0]}' is in split 'train' but .*gt.json gives it subset 'test'"),
        # (split_test.txt is read first: the second listing is the one in split_train.txt)
        ((train_ids, test_ids + [train_ids[0]]), f"split_train.txt: line 1: video '{train_ids[0]}' is also listed in .*split_test.txt"),
    ]
    for (train_lines, test_lines), message in cases:
        with pytest.raises(StpnError, match=message) as e:
            build_with(train_lines, test_lines)
        _one_line_error(e)
        assert not (tmp_path / "ds" / "dataset.json").exists()
    # A video of gt.json that no split file lists is left out, with a counted warning.
    build_with(train_ids[:2], test_ids)
    meta = metadata(str(tmp_path / "ds"))
    assert meta["splits"]["train"]["num_videos"] == 2 and meta["warnings"] == {"not_in_split_files": 1}
    assert "WARNING: 1 annotated videos that no split_<subset>.txt file lists" in capsys.readouterr().out
    assert {os.path.basename(s["path"]) for s in meta["sources"]} >= {"gt.json", "split_train.txt", "split_test.txt"}
    with pytest.raises(StpnError, match="--strict"):
        build(tmp_path / "ds2", layout="thumos14_npy", strict=True, **release)


def test_label_not_in_class_list(tmp_path):
    release = write_basnet_release(str(tmp_path / "rel"), num_train=1, num_test=1)
    data = json.load(open(release["annotations"]))
    vid = next(iter(data["database"]))
    data["database"][vid]["annotations"][0]["label"] = "Juggling"
    json.dump(data, open(release["annotations"], "w"))
    with pytest.raises(StpnError, match=f"video '{vid}' has label 'Juggling', which is not in the "
                                        "20-class list of thumos14") as e:
        build(tmp_path / "ds", layout="thumos14_npy", **release)
    _one_line_error(e)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(ann.THUMOS14_CLASSES + ("Juggling",)) + "\n")
    build(tmp_path / "ds", layout="thumos14_npy", classes=str(classes), **release)
    assert metadata(str(tmp_path / "ds"))["classes"][-1] == "Juggling"


def test_segments_outside_duration_clipped_dropped_or_kept(tmp_path, capsys):
    release = write_activitynet_release(str(tmp_path / "rel"))
    data = json.load(open(release["annotations"]))
    # Video A00xYz_k0Q lasts 20 s: [15, 25] is clipped to [15, 20], [21, 22] is dropped.
    data["database"]["A00xYz_k0Q"]["annotations"] += [
        {"segment": [15.0, 25.0], "label": "Bathing dog"}, {"segment": [21.0, 22.0], "label": "Doing karate"}]
    json.dump(data, open(release["annotations"], "w"))
    build(tmp_path / "ds", layout="activitynet_h5", **release)
    text = capsys.readouterr().out
    assert "WARNING: 1 segments clipped" in text and "WARNING: 1 segments dropped" in text
    gt = {r.video_id: r for r in ann.read_activitynet_json(str(tmp_path / "ds" / "ground_truth.json"))}
    assert [(s.start, s.end, s.label) for s in gt["A00xYz_k0Q"].segments] == [
        (2.0, 9.5, "Bathing dog"), (15.0, 20.0, "Bathing dog")]
    # Labels follow the kept segments: "Doing karate" only had the dropped one.
    assert gt["A00xYz_k0Q"].labels == ("Bathing dog",)
    build(tmp_path / "keep", layout="activitynet_h5", segments_outside="keep", **release)
    gt = {r.video_id: r for r in ann.read_activitynet_json(str(tmp_path / "keep" / "ground_truth.json"))}
    assert len(gt["A00xYz_k0Q"].segments) == 3
    assert "WARNING: 2 segments outside the video duration (kept" in capsys.readouterr().out


def test_malformed_json(tmp_path):
    release = write_activitynet_release(str(tmp_path / "rel"))
    with open(release["annotations"], "a") as f:
        f.write("}")
    with pytest.raises(StpnError, match="activity_net.v1-3.min.json: malformed JSON at line 1") as e:
        build(tmp_path / "ds", layout="activitynet_h5", **release)
    _one_line_error(e)
    extract = write_toolkit_extract_release(str(tmp_path / "tk"), num_train=1, num_test=1)
    meta_dir = os.path.join(extract["features"], "train", "meta")
    meta_file = os.path.join(meta_dir, os.listdir(meta_dir)[0])
    with open(meta_file, "w") as f:
        f.write('{"fps": 25,')
    with pytest.raises(StpnError, match=f"{meta_file}: malformed JSON"):
        build(tmp_path / "ds", layout="thumos14_npy", **extract)


def test_corrupt_tfrecord_at_training_time_names_the_file(tmp_path):
    release = write_thumos14_reduced_release(str(tmp_path / "rel"), indices=pick_thumos14_videos(4, 1))
    build(tmp_path / "ds", layout="thumos14_reduced", allow_pickle=True, num_shards=2, **release)
    shards = list_shards(str(tmp_path / "ds"), "train")
    with open(shards[1], "r+b") as f:
        f.truncate(os.path.getsize(shards[1]) - 7)
    ds = tfrecord_dataset(shards).map(
        lambda s: parse_example(s, num_classes=20, feature_dim=8))
    with pytest.raises(StpnError, match=f"^{shards[1]}: corrupt or truncated TFRecord file"):
        with corrupt_record_errors(shards):
            for _ in ds:
                pass


def test_unknown_layout_and_missing_annotations(tmp_path):
    with pytest.raises(StpnError, match="unknown layout 'thumos15'"):
        build(tmp_path / "ds", layout="thumos15", annotations="a", features="f")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StpnError, match="file: output exists and is not a directory"):
        build(tmp_path / "file", layout="thumos14_npy", annotations="a", features="f")
    with pytest.raises(StpnError, match="nope: annotations not found"):
        build(tmp_path / "ds", layout="thumos14_npy", annotations=str(tmp_path / "nope"), features="f")

"""Tests for stpn_tf.data.features and stpn_tf.artifacts.feature_dir: the public feature layouts and the
`stpn extract` folder, read one video at a time."""

import json
import os

import h5py
import numpy as np
import pytest

from stpn_tf.artifacts import feature_dir
from stpn_tf.data import features as feat
from stpn_tf.core.errors import StpnError


def _joint_file(tmp_path, entries):
    arr = np.empty(len(entries), dtype=object)
    for i, e in enumerate(entries):
        arr[i] = e
    path = str(tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy")
    np.save(path, arr, allow_pickle=True)
    return path


def test_joint_npy_splits_rgb_first_and_uses_25fps(tmp_path):
    # Row t of video 0 is [0..7] + 10 t: RGB = first 4 columns, flow = last 4.
    v0 = (np.arange(8)[None, :] + 10 * np.arange(3)[:, None]).astype(np.float32)
    v1 = np.ones((2, 8), np.float32)
    path = _joint_file(tmp_path, [v0, v1])
    src = feat.JointNpyFeatures(path, ["a", "b"], allow_pickle=True)
    assert src.video_ids() == ["a", "b"] and src.has("b") and not src.has("c")
    video = src.read("a")
    np.testing.assert_array_equal(video.rgb, [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]])
    np.testing.assert_array_equal(video.flow, [[4, 5, 6, 7], [14, 15, 16, 17], [24, 25, 26, 27]])
    assert (video.fps, video.stride_frames, video.duration) == (25.0, 16, None)
    assert "[0] (a)" in video.where
    assert src.source_files(["a"]) == [path]


def test_joint_npy_refuses_pickle_by_default(tmp_path):
    path = _joint_file(tmp_path, [np.zeros((2, 8), np.float32)])
    with pytest.raises(StpnError, match="only pickle can load.*can run arbitrary code.*--allow_pickle"):
        feat.JointNpyFeatures(path, ["a"])


def test_joint_npy_bad_inputs(tmp_path):
    path = _joint_file(tmp_path, [np.zeros((2, 8), np.float32), np.zeros((2, 7), np.float32)])
    with pytest.raises(StpnError, match="expected 3 entries aligned with videoname.npy"):
        feat.JointNpyFeatures(path, ["a", "b", "c"], allow_pickle=True)
    with pytest.raises(StpnError, match="duplicate video id 'a'"):
        feat.JointNpyFeatures(path, ["a", "a"], allow_pickle=True)
    src = feat.JointNpyFeatures(path, ["a", "b"], allow_pickle=True)
    with pytest.raises(StpnError, match=r"\[1\] \(b\): expected joint features \[T, 2D\]"):
        src.read("b")
    truncated = str(tmp_path / "cut.npy")
    with open(path, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[:100])
    with pytest.raises(StpnError, match="cut.npy: cannot load"):
        feat.JointNpyFeatures(truncated, ["a", "b"], allow_pickle=True)
    with pytest.raises(StpnError, match="feature file not found"):
        feat.JointNpyFeatures(str(tmp_path / "nope.npy"), ["a"], allow_pickle=True)


def _per_video(root, split, video, rgb, flow=None, meta=None):
    for stream, arr in (("rgb", rgb), ("flow", flow)):
        if arr is not None:
            os.makedirs(os.path.join(root, split, stream), exist_ok=True)
            np.save(os.path.join(root, split, stream, video + ".npy"), arr)
    if meta is not None:
        os.makedirs(os.path.join(root, split, "meta"), exist_ok=True)
        with open(os.path.join(root, split, "meta", video + ".json"), "w") as f:
            f.write(meta if isinstance(meta, str) else json.dumps(meta))


def test_per_video_npy_with_and_without_meta(tmp_path):
    root = str(tmp_path / "features")
    _per_video(root, "train", "v1", np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32))
    _per_video(root, "test", "v2", np.full((5, 4), 2.0, np.float64), np.full((5, 4), 3.0),
               meta={"fps": 10, "stride_frames": 16, "num_snippets": 5, "duration": 8.1})
    src = feat.PerVideoNpyFeatures(root)
    assert sorted(src.video_ids()) == ["v1", "v2"]
    v1 = src.read("v1")
    assert v1.rgb.shape == (3, 4) and float(v1.flow.sum()) == 12.0  # 3 x 4 ones
    assert (v1.fps, v1.stride_frames, v1.duration) == (25.0, 16, None)
    v2 = src.read("v2")
    assert (v2.fps, v2.stride_frames, v2.duration) == (10.0, 16, 8.1)
    assert float(v2.rgb[0, 0]) == 2.0 and float(v2.flow[4, 3]) == 3.0
    files = src.source_files(["v2"])
    assert [os.path.basename(os.path.dirname(p)) for p in files] == ["rgb", "flow", "meta"]


def test_per_video_npy_bad_inputs(tmp_path):
    root = str(tmp_path / "f")
    _per_video(root, "other", "v1", np.zeros((3, 4), np.float32), None)  # a split without meta folder
    _per_video(root, "train", "v2", np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32),
               meta="{fps: 25")
    _per_video(root, "train", "v3", np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32),
               meta={"num_snippets": 4})
    _per_video(root, "train", "v4", np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32),
               meta={"fps": 0})
    obj = np.empty(1, dtype=object)
    obj[0] = [1, 2]
    _per_video(root, "other", "v5", obj, np.zeros((3, 4), np.float32))
    src = feat.PerVideoNpyFeatures(root)
    with pytest.raises(StpnError, match="v1.npy: missing flow features for video v1"):
        src.read("v1")
    with pytest.raises(StpnError, match="meta/v2.json: malformed JSON at line 1"):
        src.read("v2")
    with pytest.raises(StpnError, match="v3.json: num_snippets 4 but .* has 3 rows"):
        src.read("v3")
    with pytest.raises(StpnError, match="v4.json: 'fps' must be > 0"):
        src.read("v4")
    with pytest.raises(StpnError, match="v5.npy: per-video features must be plain numeric arrays"):
        src.read("v5")
    # The same video in two split folders is a duplicate id.
    _per_video(root, "test", "v1", np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32))
    with pytest.raises(StpnError, match="duplicate video id 'v1' in split folders 'other' and 'test'"):
        feat.PerVideoNpyFeatures(root)
    with pytest.raises(StpnError, match="no '<split>/rgb'"):
        feat.PerVideoNpyFeatures(str(tmp_path))


def test_h5_groups_joint_and_v_prefix(tmp_path):
    path = str(tmp_path / "feats.h5")
    with h5py.File(path, "w") as f:
        g = f.create_group("v_abc")  # ActivityNet releases prefix ids with "v_"
        g.create_dataset("rgb", data=np.zeros((4, 3), np.float32))
        g.create_dataset("flow", data=np.ones((4, 3), np.float32))
        g.attrs["fps"] = 8.0
        d = f.create_dataset("xyz", data=np.arange(12, dtype=np.float32).reshape(2, 6))
        d.attrs["duration"] = 1.5
        f.create_group("bad").create_dataset("rgb", data=np.zeros((2, 3)))
    src = feat.H5Features(path)
    assert src.has("abc") and src.has("xyz") and not src.has("nope")
    a = src.read("abc")
    assert a.rgb.shape == (4, 3) and float(a.flow.sum()) == 12.0 and a.fps == 8.0 and a.stride_frames == 16
    x = src.read("xyz")
    # Row 0 = 0..5: RGB = 0, 1, 2; flow = 3, 4, 5.
    np.testing.assert_array_equal(x.rgb[0], [0, 1, 2])
    np.testing.assert_array_equal(x.flow[0], [3, 4, 5])
    assert x.duration == 1.5 and x.fps == 25.0
    with pytest.raises(StpnError, match=r"feats.h5\[bad\]: group lacks dataset\(s\) \['flow'\]"):
        src.read("bad")
    src.close()
    not_h5 = tmp_path / "not.h5"
    not_h5.write_bytes(b"definitely not hdf5")
    with pytest.raises(StpnError, match="not.h5: cannot open as HDF5"):
        feat.H5Features(str(not_h5))


def test_per_video_npy_without_meta_in_an_extract_folder_is_unfinished(tmp_path):
    root = str(tmp_path / "features")
    _per_video(root, "test", "done", np.zeros((2, 4)), np.zeros((2, 4)), meta={"fps": 25.0})
    _per_video(root, "test", "cut", np.zeros((2, 4)), np.zeros((2, 4)))  # killed before its meta
    src = feat.PerVideoNpyFeatures(root)
    assert src.has("done") and not src.has("cut") and src.unfinished == ["cut"]


def _extracted(root, video_id="v_b", length=7, dim=6):
    rng = np.random.default_rng(0)
    video = feature_dir.VideoFeatures(
        video_id=video_id, rgb=rng.normal(0, 1, (length, dim)).astype(np.float32),
        flow=rng.normal(0, 1, (length, dim)).astype(np.float32), fps=25.0, stride_frames=16,
        num_frames=length * 16 + 3, duration=(length * 16 + 3) / 25.0)
    return video, feature_dir.write_video(root, "test", video)


def test_extracted_video_round_trip(tmp_path):
    root = str(tmp_path)
    video, paths = _extracted(root)
    assert paths == feature_dir.video_paths(root, "test", "v_b")
    assert feature_dir.meta_files(root, "test") == [paths["meta"]]
    assert feature_dir.locate(paths["meta"]) == (root, "test", "v_b")
    with open(paths["meta"]) as handle:  # the keys in the order `stpn extract` writes them
        assert list(json.load(handle)) == list(feature_dir.META_KEYS)
    back = feature_dir.read_video(*feature_dir.locate(paths["meta"]), complete=True, feature_dim=6)
    np.testing.assert_array_equal(back.rgb, video.rgb)
    np.testing.assert_array_equal(back.flow, video.flow)
    assert back.meta() == video.meta() and back.num_snippets == 7
    # The same folder reads as a build-dataset source, timing from the meta file.
    source = feat.PerVideoNpyFeatures(root, fps=10.0)
    assert source.video_ids() == ["v_b"] and source.read("v_b").fps == 25.0


def test_extracted_video_errors(tmp_path):
    root = str(tmp_path)
    _, paths = _extracted(root)
    with pytest.raises(StpnError, match=r"v_b.npy: 6 values per snippet, the model expects 1024"):
        feature_dir.read_video(root, "test", "v_b", complete=True, feature_dim=1024)
    with pytest.raises(StpnError, match="missing.json: cannot read"):
        feature_dir.read_video(root, "test", "missing", complete=True)
    with open(os.path.join(root, "test", "meta", "nomatch.json"), "w") as handle:
        json.dump({"video_id": "v_x", "fps": 25, "stride_frames": 16, "num_snippets": 7}, handle)
    with pytest.raises(StpnError, match="nomatch.json: lacks num_frames, duration"):
        feature_dir.read_video(root, "test", "nomatch", complete=True)
    with pytest.raises(StpnError, match="nomatch.json: names video 'v_x', not 'nomatch'"):
        feature_dir.read_video(root, "test", "nomatch")
    os.remove(paths["flow"])
    with pytest.raises(StpnError, match=r"v_b.npy: missing flow features for video v_b \(listed by"):
        feature_dir.read_video(root, "test", "v_b", complete=True)
    # What build-dataset checks later (NaN, lengths, dtype) a complete video must already pass.
    for name, rgb, flow, message in (
            ("nan", np.full((2, 3), np.nan, np.float32), np.zeros((2, 3), np.float32), "NaN or infinite"),
            ("f64", np.zeros((2, 3)), np.zeros((2, 3)), "dtype float64, expected float32"),
            ("dims", np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32), r"has rgb \[2, 3\] but flow")):
        video = feature_dir.VideoFeatures(video_id=name, rgb=rgb, flow=flow, fps=25.0, stride_frames=16,
                                          num_frames=32, duration=1.28)
        feature_dir.write_video(root, "test", video)
        assert feature_dir.read_video(root, "test", name).num_snippets == 2  # read as stored
        with pytest.raises(StpnError, match=message):
            feature_dir.read_video(root, "test", name, complete=True)

"""The Beam extraction pipeline (DirectRunner) gives the same features and records as `stpn extract`.

Skipped when apache-beam (the optional `beam` extra) is not installed.
"""

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam")

import tensorflow as tf

from stpn_tf.beam import extract as beam_extract
from stpn_tf.data import annotations as ann
from stpn_tf.data import tfrecord
from stpn_tf.extract import pipeline, standin
from tests.test_extract import textured_square_frames, write_video

FAST = dict(tvl1_scales=2, tvl1_warps=1, tvl1_inner_iterations=5, tvl1_outer_iterations=1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam")
    standin.build_standin_i3d(str(root / "rgb"), channels=3)
    standin.build_standin_i3d(str(root / "flow"), channels=2)
    videos = root / "videos"
    videos.mkdir()
    write_video(str(videos / "clip_a.avi"), textured_square_frames(70, seed=1), fps=50)  # 2 snippets
    write_video(str(videos / "clip_b.avi"), textured_square_frames(40, seed=2), fps=25)  # 2 snippets
    (videos / "clip_bad.avi").write_bytes(b"not a video")
    truth = root / "gt.json"
    truth.write_text(json.dumps({"database": {
        "clip_a": {"subset": "test", "duration": 1.4,
                   "annotations": [{"segment": [0.2, 0.9], "label": "Diving"}]}}}))
    return root


def test_beam_pipeline_equals_single_process(inputs, tmp_path, capsys):
    common = dict(videos=[str(inputs / "videos")], split="test", rgb_model=str(inputs / "rgb"),
                  flow_model=str(inputs / "flow"), batch_size=2, **FAST)
    single_out = str(tmp_path / "single")
    assert pipeline.run_extract(out=single_out, **common) == 1  # clip_bad fails

    beam_out, dataset = str(tmp_path / "beam"), str(tmp_path / "dataset")
    code = beam_extract.run_beam_extract(out=beam_out, dataset_dir=dataset, annotations=str(inputs / "gt.json"),
                                         num_shards=2, **common)
    assert code == 1
    assert "2 videos written, 1 failed" in capsys.readouterr().out

    # Same npy layout, same numbers.
    for video in ("clip_a", "clip_b"):
        single = pipeline.output_paths(single_out, "test", video)
        beamed = pipeline.output_paths(beam_out, "test", video)
        for stream in ("rgb", "flow"):
            np.testing.assert_allclose(np.load(beamed[stream]), np.load(single[stream]), rtol=1e-6, atol=1e-6)
        with open(single["meta"]) as a, open(beamed["meta"]) as b:
            assert json.load(a) == json.load(b)
    assert not os.path.exists(pipeline.output_paths(beam_out, "test", "clip_bad")["meta"])

    # The TFRecord split holds one example per good video, equal to the single-process features.
    meta = tfrecord.read_dataset_metadata(dataset)
    assert meta["splits"]["test"]["num_videos"] == 2 and meta["splits"]["test"]["num_snippets"] == 4
    assert meta["feature_dim"] == 1024 and meta["fps"] == 25.0 and meta["stride_frames"] == 16
    shards = tfrecord.list_shards(dataset, "test")
    assert [os.path.basename(s) for s in shards] == ["test-00000-of-00002.tfrecord",
                                                     "test-00001-of-00002.tfrecord"]
    parsed = {}
    for record in tf.data.TFRecordDataset(shards):
        example = tfrecord.parse_example(record, num_classes=20, feature_dim=1024)
        parsed[example["video/id"].numpy().decode()] = example
    assert sorted(parsed) == ["clip_a", "clip_b"]
    diving = ann.THUMOS14_CLASSES.index("Diving")
    for video, example in parsed.items():
        single = pipeline.output_paths(single_out, "test", video)
        np.testing.assert_allclose(example["video/rgb"].numpy(), np.load(single["rgb"]), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(example["video/flow"].numpy(), np.load(single["flow"]), rtol=1e-6, atol=1e-6)
        # 16 frames at 25 fps per snippet = 0.64 s.
        assert example["video/seconds_per_snippet"].numpy() == pytest.approx(0.64)
        expected_labels = np.zeros(20, np.float32)
        if video == "clip_a":
            expected_labels[diving] = 1.0
        np.testing.assert_array_equal(example["video/labels"].numpy(), expected_labels)
    assert parsed["clip_a"]["video/duration"].numpy() == pytest.approx(1.4)   # 70 frames / 50 fps
    assert parsed["clip_b"]["video/duration"].numpy() == pytest.approx(1.6)   # 40 frames / 25 fps

    truth = ann.read_activitynet_json(os.path.join(dataset, tfrecord.GROUND_TRUTH_FILE))
    assert [(r.video_id, r.subset, r.labels) for r in truth] == [("clip_a", "test", ("Diving",))]


def test_beam_localize_equals_single_process(inputs, tmp_path):
    from stpn_tf import inference
    from stpn_tf.beam import localize as beam_localize
    from stpn_tf.extract import localize_videos as lv
    from stpn_tf.model.stpn import load_classes, load_stream_model
    from tests.test_extract import _write_workdir

    features = str(tmp_path / "features")
    pipeline.run_extract(videos=[str(inputs / "videos" / "clip_a.avi"), str(inputs / "videos" / "clip_b.avi")],
                         out=features, split="test", rgb_model=str(inputs / "rgb"),
                         flow_model=str(inputs / "flow"), **FAST)
    workdir = str(tmp_path / "workdir")
    _write_workdir(workdir, ["Diving", "HighJump", "PoleVault"])
    output = str(tmp_path / "detections.json")
    assert beam_localize.run_beam_localize(features=features, split="test", workdir=workdir,
                                           output=output) == 0
    with open(output) as handle:
        beamed = json.load(handle)["results"]

    # Single-process reference: the same streams and localization, all videos in one batch.
    models = {s: load_stream_model(workdir, s) for s in ("rgb", "flow")}
    per_video = []
    for video in ("clip_a", "clip_b"):
        paths = pipeline.output_paths(features, "test", video)
        with open(paths["meta"]) as handle:
            meta = json.load(handle)
        item = pipeline.VideoFeatures(video_id=video, rgb=np.load(paths["rgb"]), flow=np.load(paths["flow"]),
                                      fps=meta["fps"], stride_frames=meta["stride_frames"],
                                      num_frames=meta["num_frames"], duration=meta["duration"])
        per_video.append({"features": item,
                          "outputs": {s: lv.stream_outputs(models[s], getattr(item, s), 400) for s in models}})
    raw = lv._raw_outputs(per_video, load_classes(workdir), fps=25.0, stride_frames=16)
    expected = inference.localize_raw(raw, jit_compile=False)["results"]

    assert sorted(beamed) == sorted(expected) == ["clip_a", "clip_b"]
    for video in expected:
        assert [d["label"] for d in beamed[video]] == [d["label"] for d in expected[video]]
        for got, want in zip(beamed[video], expected[video]):
            assert got["score"] == pytest.approx(want["score"], rel=1e-5, abs=1e-6)
            assert got["segment"] == pytest.approx(want["segment"], rel=1e-5, abs=1e-5)

"""Beam pipelines on the DirectRunner: extraction gives the same features and records as `stpn extract`,
and batch localization over an export gives the same detections as single-process calls of the export.

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
from stpn_tf.artifacts import annotations as ann
from stpn_tf.artifacts import feature_dir
from stpn_tf.artifacts.shards import list_shards
from stpn_tf.data.records.decoder import parse_example
from stpn_tf.core.errors import StpnError
from stpn_tf.extract import pipeline, standin
from tests.helpers.video import textured_square_frames, write_video
from tests.helpers.workdir import SMALL_CLASSES, SMALL_D, SMALL_GRID_LENGTH, SMALL_SETTINGS

from stpn_tf.data.grid import GridConfig
from stpn_tf.extract.flow import TVL1Options
from stpn_tf.artifacts.dataset_dir import ground_truth_path, read_dataset_info

FAST = pipeline.ExtractConfig(batch_size=2, tvl1=TVL1Options(scales=2, warps=1, inner_iterations=5,
                                                             outer_iterations=1))


def metadata(path):
    """dataset.json as the writer's JSON (read and checked by read_dataset_info)."""
    return read_dataset_info(str(path)).to_json()


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
    common = dict(videos=[str(inputs / "videos")], split="test", config=FAST,
                  models=pipeline.I3DModels(rgb_model=str(inputs / "rgb"), flow_model=str(inputs / "flow")))
    single_out = str(tmp_path / "single")
    assert pipeline.run_extract(out=single_out, **common) == 1  # clip_bad fails

    beam_out, dataset = str(tmp_path / "beam"), str(tmp_path / "dataset")
    code = beam_extract.run_beam_extract(out=beam_out, dataset_dir=dataset, annotations=str(inputs / "gt.json"),
                                         num_shards=2, **common)
    assert code == 1
    assert "2 videos written, 1 failed" in capsys.readouterr().out

    # Same npy layout, same numbers.
    for video in ("clip_a", "clip_b"):
        single = feature_dir.video_paths(single_out, "test", video)
        beamed = feature_dir.video_paths(beam_out, "test", video)
        for stream in ("rgb", "flow"):
            np.testing.assert_allclose(np.load(beamed[stream]), np.load(single[stream]), rtol=1e-6, atol=1e-6)
        with open(single["meta"]) as a, open(beamed["meta"]) as b:
            assert json.load(a) == json.load(b)
    assert not os.path.exists(feature_dir.video_paths(beam_out, "test", "clip_bad")["meta"])

    # The TFRecord split holds one example per good video, equal to the single-process features.
    meta = metadata(dataset)
    assert meta["splits"]["test"]["num_videos"] == 2 and meta["splits"]["test"]["num_snippets"] == 4
    assert meta["feature_dim"] == 1024 and meta["fps"] == 25.0 and meta["stride_frames"] == 16
    shards = list_shards(dataset, "test")
    assert [os.path.basename(s) for s in shards] == ["test-00000-of-00002.tfrecord",
                                                     "test-00001-of-00002.tfrecord"]
    # Each shard's record count is recorded (clip_a in shard 0, clip_b in shard 1; clip_bad failed).
    assert meta["splits"]["test"]["shard_records"] == {"test-00000-of-00002.tfrecord": 1,
                                                       "test-00001-of-00002.tfrecord": 1}
    parsed = {}
    for record in tf.data.TFRecordDataset(shards):
        example = parse_example(record, num_classes=20, feature_dim=1024)
        parsed[example["video/id"].numpy().decode()] = example
    assert sorted(parsed) == ["clip_a", "clip_b"]
    diving = ann.THUMOS14_CLASSES.index("Diving")
    for video, example in parsed.items():
        single = feature_dir.video_paths(single_out, "test", video)
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

    truth = ann.read_activitynet_json(ground_truth_path(dataset))
    assert [(r.video_id, r.subset, r.labels) for r in truth] == [("clip_a", "test", ("Diving",))]


# ---------------------------------------------------------------- batch localization over an export

D, C = SMALL_D, len(SMALL_CLASSES)
CLASSES = SMALL_CLASSES
SETTINGS = SMALL_SETTINGS
# (video id, snippets L, fps): different lengths so batches need padding; 10 fps gives 1.6 s snippets.
VIDEOS = [("v_a", 3, 25.), ("v_b", 7, 25.), ("v_c", 12, 10.), ("v_d", 1, 25.), ("v_e", 20, 25.), ("v_f", 5, 10.)]


@pytest.fixture(scope="module")
def all_snippets_export(small_workdir, tmp_path_factory):
    from stpn_tf.inference.export import run_export

    # Without the grid every distinct length is a new XLA compilation (about 2 s each here), so this export
    # runs the same localization graph uncompiled to keep this file fast (XLA vs graph agreement is tested in
    # tests/test_localize.py).
    out = str(tmp_path_factory.mktemp("export") / "all_snippets")
    assert run_export(workdir=small_workdir, out=out, grid=GridConfig(length=SMALL_GRID_LENGTH, all_snippets=True),
                      jit_compile=False, localizer_config=SETTINGS) == 0
    return out


@pytest.fixture(params=["grid", "all_snippets"])
def export(request):
    """The grid export (the shared `small_export`, XLA-compiled) and the every-snippet one."""
    return request.getfixturevalue({"grid": "small_export", "all_snippets": "all_snippets_export"}[request.param])


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("features"))
    rng = np.random.default_rng(7)
    for video_id, length, fps in VIDEOS:
        feature_dir.write_video(root, "test", feature_dir.VideoFeatures(
            video_id=video_id, rgb=rng.normal(0, 1, (length, D)).astype(np.float32),
            flow=rng.normal(0, 1, (length, D)).astype(np.float32), fps=fps, stride_frames=16,
            num_frames=length * 16 + 3, duration=(length * 16 + 3) / fps))
    return root


def _load_video(root, video_id):
    paths = feature_dir.video_paths(root, "test", video_id)
    with open(paths["meta"]) as handle:
        meta = json.load(handle)
    return np.load(paths["rgb"]), np.load(paths["flow"]), meta["stride_frames"] / meta["fps"]


def _serve_one(signature, rgb, flow, sps):
    """One unpadded video through serving_default (batch of 1)."""
    out = signature(rgb=tf.constant(rgb[None]), flow=tf.constant(flow[None]),
                    num_snippets=tf.constant([len(rgb)], tf.int32),
                    seconds_per_snippet=tf.constant([sps], tf.float32))
    return {key: value.numpy()[0] for key, value in out.items() if key != "class_names"}


def _detections(out):
    k = int(out["num_detections"])
    return [(CLASSES[int(out["detection_classes"][j])], float(out["detection_scores"][j]),
             [float(v) for v in out["detection_segments"][j]]) for j in range(k)]


def test_export_ignores_padding(export, features):
    # A padded batch (garbage rows past each video's length, time longer than every video) gives every
    # video the same outputs as calling the export on that video alone.
    signature = tf.saved_model.load(export).signatures["serving_default"]
    videos = [_load_video(features, v) for v, _, _ in VIDEOS]
    time = max(len(r) for r, _, _ in videos) + 5
    rgb = np.full((len(videos), time, D), 1e3, np.float32)
    flow = np.full((len(videos), time, D), -1e3, np.float32)
    for i, (r, f, _) in enumerate(videos):
        rgb[i, :len(r)], flow[i, :len(f)] = r, f
    batched = signature(rgb=tf.constant(rgb), flow=tf.constant(flow),
                        num_snippets=tf.constant([len(r) for r, _, _ in videos], tf.int32),
                        seconds_per_snippet=tf.constant([s for _, _, s in videos], tf.float32))
    batched = {key: value.numpy() for key, value in batched.items()}
    all_snippets = export.endswith("all_snippets")
    total = 0
    for i, (r, f, s) in enumerate(videos):
        alone = _serve_one(signature, r, f, s)
        valid = len(r) if all_snippets else 16
        np.testing.assert_allclose(batched["attention"][i, :, :valid], alone["attention"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched["tcam"][i, :, :valid], alone["tcam"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched["video_probabilities"][i], alone["video_probabilities"], rtol=1e-5)
        got = _detections({key: value[i] for key, value in batched.items() if key != "class_names"})
        want = _detections(alone)
        assert [d[0] for d in got] == [d[0] for d in want]
        for (_, score, segment), (_, want_score, want_segment) in zip(got, want):
            assert score == pytest.approx(want_score, rel=1e-5, abs=1e-6)
            assert segment == pytest.approx(want_segment, rel=1e-5, abs=1e-5)
        total += len(want)
        # Segments stay inside the real snippets: L * stride / fps seconds.
        assert all(0 <= a <= b <= len(r) * s + 1e-5 for _, _, (a, b) in want)
    assert total > 0  # the comparison covered real detections


def test_beam_localize_equals_single_process(export, features, tmp_path, capsys):
    from stpn_tf.beam import localize as beam_localize

    output = str(tmp_path / "out" / "detections.json")
    # Batches of 4: six videos give one full and one partly filled batch, both padded along time.
    assert beam_localize.run_beam_localize(features=features, split="test", export_dir=export, output=output,
                                           batch_size=4) == 0
    assert "6 videos localized, 0 failed" in capsys.readouterr().out
    with open(output) as handle:
        written = json.load(handle)
    assert written["version"] == "VERSION 1.3" and written["external_data"]["used"] is True
    beamed = written["results"]
    assert list(beamed) == sorted(v for v, _, _ in VIDEOS)
    assert os.listdir(tmp_path / "out") == ["detections.json"]  # no temporary file left

    # Single process: plain tf.saved_model.load, one video per call, no padding, no stpn_tf code.
    signature = tf.saved_model.load(export).signatures["serving_default"]
    total = 0
    for video_id, _, _ in VIDEOS:
        want = _detections(_serve_one(signature, *_load_video(features, video_id)))
        got = beamed[video_id]
        assert [d["label"] for d in got] == [label for label, _, _ in want], video_id
        for detection, (_, score, segment) in zip(got, want):
            assert detection["score"] == pytest.approx(score, rel=1e-5, abs=1e-6)
            assert detection["segment"] == pytest.approx(segment, rel=1e-5, abs=1e-5)
        total += len(want)
    assert total > 0


def test_workdir_path_equals_export(small_workdir, small_export, features):
    # The training-work-directory path builds the export graph in memory (here uncompiled): same
    # detections as the export made with the same settings (XLA-compiled localization).
    from stpn_tf.inference.runner import load_serving_model

    videos = [_load_video(features, v) for v, _, _ in VIDEOS]
    args = ([r for r, _, _ in videos], [f for _, f, _ in videos], [s for _, _, s in videos])
    in_memory = load_serving_model(small_workdir, grid=GridConfig(length=SMALL_GRID_LENGTH), localizer_config=SETTINGS,
                                   jit_compile=False).predict(*args)
    exported = load_serving_model(small_export).predict(*args)
    assert sum(len(o["detections"]) for o in exported) > 0
    for a, b in zip(in_memory, exported):
        assert [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
        for x, y in zip(a["detections"], b["detections"]):
            assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-6)
            assert x["segment"] == pytest.approx(y["segment"], rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(a["attention"], b["attention"], rtol=1e-5, atol=1e-6)


def test_beam_localize_skips_bad_files(all_snippets_export, features, tmp_path, capsys):
    from stpn_tf.beam import localize as beam_localize

    root = str(tmp_path / "features")
    shutil.copytree(features, root)
    meta_dir = os.path.join(root, "test", "meta")
    for name in os.listdir(meta_dir):
        if name not in ("v_a.json", "v_d.json"):
            os.remove(os.path.join(meta_dir, name))
    # Three bad videos: malformed meta, NaN features, and rgb/flow of different lengths.
    with open(os.path.join(meta_dir, "bad_json.json"), "w") as handle:
        handle.write("{not json")
    rng = np.random.default_rng(3)
    for video_id, rgb, flow in (("bad_nan", np.full((2, D), np.nan), rng.normal(0, 1, (2, D))),
                                ("bad_len", rng.normal(0, 1, (2, D)), rng.normal(0, 1, (3, D)))):
        np.save(os.path.join(root, "test", "rgb", f"{video_id}.npy"), rgb.astype(np.float32))
        np.save(os.path.join(root, "test", "flow", f"{video_id}.npy"), flow.astype(np.float32))
        with open(os.path.join(meta_dir, f"{video_id}.json"), "w") as handle:
            json.dump({"video_id": video_id, "fps": 25.0, "stride_frames": 16, "num_frames": 40,
                       "num_snippets": 2, "duration": 1.6}, handle)
    output = str(tmp_path / "detections.json")
    assert beam_localize.run_beam_localize(features=root, split="test", export_dir=all_snippets_export,
                                           output=output) == 1
    assert "2 videos localized, 3 failed" in capsys.readouterr().out
    with open(output) as handle:
        assert sorted(json.load(handle)["results"]) == ["v_a", "v_d"]


def test_beam_localize_input_errors(small_workdir, tmp_path):
    from stpn_tf.beam import localize as beam_localize

    with pytest.raises(StpnError, match="no feature meta files"):
        beam_localize.run_beam_localize(features=str(tmp_path), split="test", export_dir=small_workdir,
                                        output=str(tmp_path / "d.json"))
    assert beam_localize.main(["--features", str(tmp_path), "--export_dir", small_workdir,
                               "--output", str(tmp_path / "d.json")]) == 2


def test_parse_args_splits_runner_flags():
    from stpn_tf.beam.localize import parse_args

    kwargs, beam_args = parse_args(["--features=f", "--export_dir=e", "--output=o.json", "--batch_size=2",
                                    "--runner=FlinkRunner", "--", "--parallelism=4", "--split=not_ours"])
    assert kwargs == {"features": "f", "split": "test", "export_dir": "e", "output": "o.json", "batch_size": 2,
                      "parts_dir": None}
    # Unknown flags and everything after `--` (even names the script knows) belong to Beam.
    assert beam_args == ["--runner=FlinkRunner", "--parallelism=4", "--split=not_ours"]


def test_extract_parse_args_splits_runner_flags(tmp_path):
    kwargs, beam_args = beam_extract.parse_args([
        "--videos", "a.mp4", "dir", "--out=f", "--dataset_dir=d", "--split=test", "--rgb_model=r",
        "--flow_model=m", "--rgb_input_range=0,1", "--tvl1_warps=2", "--direct_num_workers=2", "--",
        "--runner=SparkRunner"])
    assert kwargs["videos"] == ["a.mp4", "dir"] and kwargs["models"].rgb_input_range == (0.0, 1.0)
    assert kwargs["config"].tvl1.warps == 2 and kwargs["config"].tvl1.scales == 5
    assert kwargs["models"].flow_input_range is None
    assert beam_args == ["--direct_num_workers=2", "--runner=SparkRunner"]
    # Every parsed name is a keyword of run_beam_extract.
    import inspect
    assert set(kwargs) <= set(inspect.signature(beam_extract.run_beam_extract).parameters)
    # A folder without videos is an input error: exit code 2 before any pipeline starts.
    assert beam_extract.main(["--videos", str(tmp_path), f"--out={tmp_path / 'f'}", "--split=test",
                              f"--dataset_dir={tmp_path / 'd'}", "--rgb_model=r", "--flow_model=m"]) == 2
    assert os.listdir(tmp_path) == []


def test_shard_counts_without_metrics_are_counted_from_the_files(tmp_path):
    """A runner that reports no metrics: dataset.json still gets each shard's count, from the written files."""
    class NoMetrics:
        def metrics(self):
            class Query:
                def query(self, _):
                    return {"counters": [], "distributions": []}
            return Query()

    with tf.io.TFRecordWriter(str(tmp_path / "test-00000-of-00002.tfrecord")) as w:
        for record in (b"a", b"b", b"c"):
            w.write(record)
    with tf.io.TFRecordWriter(str(tmp_path / "test-00001-of-00002.tfrecord")):
        pass
    names = ["test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord"]
    assert beam_extract._shard_records(NoMetrics(), str(tmp_path), names) == {names[0]: 3, names[1]: 0}

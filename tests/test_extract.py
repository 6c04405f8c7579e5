"""Tests for stpn_tf.extract: resampling, crop geometry, value ranges, TV-L1, I3D loading, pipeline.

Videos are written by the tests with OpenCV (lossless FFV1), models are stand-ins saved by the tests;
nothing is downloaded.
"""

import dataclasses
import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import pytest
import tensorflow as tf

from stpn_tf.core.errors import StpnError
from stpn_tf.extract import flow as flow_lib
from stpn_tf.extract import i3d
from stpn_tf.extract import pipeline
from stpn_tf.extract import standin
from stpn_tf.extract import video as video_lib
from tests.helpers.video import textured_square_frames, write_video
from tests.helpers.workdir import write_random_workdir

# Few TV-L1 iterations keep the tests fast; the pipeline-vs-reference comparison uses the same options
# on both sides, and the accuracy test below uses OpenCV's standard settings.
FAST_TVL1 = flow_lib.TVL1Options(scales=2, warps=1, inner_iterations=5, outer_iterations=1)


def fast(**changes) -> pipeline.ExtractConfig:
    """The extraction settings with a cheap TV-L1 solver (tests only)."""
    return pipeline.ExtractConfig(**{"tvl1": FAST_TVL1, **changes})


# ---------------------------------------------------------------- resampling


def test_resample_indices_by_hand():
    # 50 -> 25 fps keeps every other frame: floor(k * 2).
    assert [video_lib.resample_source_index(k, 50, 25) for k in range(4)] == [0, 2, 4, 6]
    # 10 -> 25 fps repeats frames: floor(k * 0.4) = 0,0,0,1,1,2,2,2.
    assert [video_lib.resample_source_index(k, 10, 25) for k in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
    # 29.97 -> 29.97 is the identity despite float ratios.
    assert [video_lib.resample_source_index(k, 29.97, 29.97) for k in range(100)] == list(range(100))


def test_resampled_frame_count_by_hand():
    assert video_lib.resampled_frame_count(60, 50, 25) == 30    # 60 * 25 / 50
    assert video_lib.resampled_frame_count(20, 10, 25) == 50    # 20 * 25 / 10
    assert video_lib.resampled_frame_count(7, 30, 10) == 3      # source frames 0, 3, 6
    assert video_lib.resampled_frame_count(0, 30, 25) == 0


@pytest.mark.parametrize("source_fps,target_fps,count", [(50, 25, 61), (10, 25, 13), (29.97, 25, 40),
                                                         (24, 10, 50), (25, 25, 17)])
def test_iter_resampled_agrees_with_index_formula(source_fps, target_fps, count):
    out = list(video_lib.iter_resampled(iter(range(count)), source_fps, target_fps))
    expected = [video_lib.resample_source_index(k, source_fps, target_fps)
                for k in range(video_lib.resampled_frame_count(count, source_fps, target_fps))]
    assert out == expected
    assert out[-1] == count - 1 or video_lib.resample_source_index(len(out), source_fps, target_fps) >= count


# ---------------------------------------------------------------- geometry and value ranges


def test_crop_geometry_by_hand():
    # 320 x 240: scale 256 / 240; width 320 * 256 / 240 = 341.33 -> 341; top (256-224)/2 = 16,
    # left (341 - 224) // 2 = 58.
    assert video_lib.crop_geometry(240, 320) == (256, 341, 16, 58)
    assert video_lib.crop_geometry(48, 64) == (256, 341, 16, 58)   # same aspect ratio
    assert video_lib.crop_geometry(320, 240) == (341, 256, 58, 16)  # portrait
    assert video_lib.crop_geometry(256, 256) == (256, 256, 16, 16)
    with pytest.raises(StpnError):
        video_lib.crop_geometry(240, 320, short_side=200, crop_size=224)


def test_resize_and_crop_keeps_the_center():
    # Left half black, right half white. Resized width 341, the edge lands at 170.5 and the crop
    # starts at column 58, so the edge is at about 112.5 in the 224-wide crop.
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, 160:] = 255
    crop = video_lib.resize_and_crop(frame)
    assert crop.shape == (224, 224, 3)
    assert np.all(crop[:, :111] == 0)
    assert np.all(crop[:, 114:] == 255)
    # A red marker at the exact center stays at the center of the crop.
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[110:130, 150:170, 0] = 255
    crop = video_lib.resize_and_crop(frame)
    rows, cols = np.nonzero(crop[:, :, 0] > 128)
    assert abs(rows.mean() - 111.5) < 1.5 and abs(cols.mean() - 111.5) < 1.5


def test_rgb_value_range():
    pixels = np.array([0, 128, 255], np.uint8)
    # 0 -> -1; 128 -> 128 * 2 / 255 - 1 = 0.0039216; 255 -> 1.
    np.testing.assert_allclose(video_lib.rgb_to_unit_range(pixels), [-1.0, 0.0039216, 1.0], atol=1e-6)


def test_flow_value_range():
    flow = np.array([[3.0, -25.0], [40.0, -20.0]], np.float32)
    # clip to [-20, 20], divide by 20: 3 -> 0.15, -25 -> -1, 40 -> 1, -20 -> -1.
    np.testing.assert_allclose(flow_lib.flow_to_unit_range(flow), [[0.15, -1.0], [1.0, -1.0]], atol=1e-7)


def test_tvl1_recovers_known_motion():
    # A textured square moving 2 px right per frame: TV-L1 (OpenCV's standard settings) must report
    # about (+2, 0) px inside the square.
    frames = textured_square_frames(2, width=96, height=64, step=2, size=32)
    gray = [flow_lib.to_gray(f) for f in frames]
    flow = flow_lib.TVL1Flow()(gray[0], gray[1])
    assert flow.shape == (64, 96, 2) and flow.dtype == np.float32
    inside = flow[24:40, 12:32]  # rows 16..47 and columns 4..35 hold the square in frame 0
    assert abs(np.median(inside[..., 0]) - 2.0) < 0.3
    assert abs(np.median(inside[..., 1])) < 0.3


# ---------------------------------------------------------------- I3D loading


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    rgb_dir, flow_dir = str(root / "rgb"), str(root / "flow")
    rgb_weights = standin.build_standin_i3d(rgb_dir, channels=3)
    flow_weights = standin.build_standin_i3d(flow_dir, channels=2)
    return {"rgb_dir": rgb_dir, "flow_dir": flow_dir, "rgb_w": rgb_weights, "flow_w": flow_weights,
            "root": root}


def test_feature_model_matches_numpy_reference(models):
    model = i3d.FeatureModel(models["rgb_dir"], channels=3)
    stacks = np.random.default_rng(1).uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32)
    features = model(stacks)
    assert features.shape == (2, 1024) and features.dtype == np.float32
    np.testing.assert_allclose(features, standin.standin_features_numpy(stacks, models["rgb_w"]),
                               rtol=1e-4, atol=1e-4)


def test_feature_model_input_range_mapping(models):
    # With input_range (0, 1) the model sees (x + 1) / 2; the stand-in is linear, so its output on
    # x equals the reference on (x + 1) / 2.
    model = i3d.FeatureModel(models["flow_dir"], channels=2, input_range=(0.0, 1.0))
    stacks = np.random.default_rng(2).uniform(-1, 1, (1, 16, 224, 224, 2)).astype(np.float32)
    expected = standin.standin_features_numpy((stacks + 1) / 2, models["flow_w"])
    np.testing.assert_allclose(model(stacks), expected, rtol=1e-4, atol=1e-4)


def test_feature_model_rejects_wrong_channels(models):
    model = i3d.FeatureModel(models["flow_dir"], channels=2)
    with pytest.raises(StpnError, match="expected stacks"):
        model(np.zeros((1, 16, 224, 224, 3), np.float32))


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(StpnError, match="cannot load the I3D model"):
        i3d.FeatureModel(str(tmp_path / "nope"), channels=3)


def _build_tf1_hub_style_model(directory, num_logits=400):
    """A TF1-format SavedModel shaped like the TF Hub Kinetics I3D module: signature "default",
    input "rgb_input" [B, F, 224, 224, 3], output "default" = logits; the 1024-d pre-logit feature
    map lives at graph tensor RGB/inception_i3d/Mixed_5c/concat:0 ([B, F', 7, 7, 1024])."""
    weights = np.random.default_rng(3).standard_normal((3, 1024)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        video = tf.compat.v1.placeholder(tf.float32, [None, None, 224, 224, 3], name="rgb_input")
        with tf.compat.v1.variable_scope("RGB/inception_i3d/Mixed_5c"):
            pooled = tf.nn.avg_pool3d(video, [2, 32, 32], [2, 32, 32], "VALID")  # [B, F/2, 7, 7, 3]
            feature_map = tf.concat([tf.tensordot(pooled, weights[:, :512], 1),
                                     tf.tensordot(pooled, weights[:, 512:], 1)], axis=4)
        logits = tf.reduce_mean(feature_map, [1, 2, 3])[:, :num_logits]
        with tf.compat.v1.Session() as session:
            builder = tf.compat.v1.saved_model.Builder(directory)
            signature = tf.compat.v1.saved_model.predict_signature_def({"rgb_input": video},
                                                                       {"default": logits})
            builder.add_meta_graph_and_variables(session, ["serve"],
                                                 signature_def_map={"default": signature})
            builder.save()
    return weights


def test_hub_style_logits_model_needs_feature_tensor(tmp_path):
    directory = str(tmp_path / "i3d-hub-style")
    weights = _build_tf1_hub_style_model(directory)
    stacks = np.random.default_rng(4).uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32)

    with pytest.raises(StpnError, match="logits"):
        i3d.FeatureModel(directory, channels=3)(stacks)

    model = i3d.FeatureModel(directory, channels=3,
                             feature_tensor="RGB/inception_i3d/Mixed_5c/concat:0", input_range=(0, 1))
    features = model(stacks)
    # Reference: the mean over time and space of the feature map is the mean of the input (mapped to
    # [0, 1]) per channel times the 3 x 1024 weights, since pooling and the 1x1 map are linear.
    channel_means = ((stacks + 1) / 2).astype(np.float64).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(features, channel_means @ weights, rtol=1e-4, atol=1e-5)
    assert any("Mixed_5c/concat:0" in name for name in i3d.list_tensors(directory))


def test_known_handle_presets():
    settings = i3d.known_model_settings("https://tfhub.dev/deepmind/i3d-kinetics-400/1")
    assert settings["input_range"] == (0.0, 1.0)
    assert settings["feature_tensor"].endswith("Mixed_5c/concat:0")
    assert i3d.known_model_settings("/models/flow_i3d") == {}


# ---------------------------------------------------------------- the per-video pipeline


def reference_features(path, rgb_weights, flow_weights, fps, stride, tvl1):
    """Independent whole-video path: decode everything, resample by index, crop, compute all flows,
    cut stacks, apply the numpy stand-in."""
    capture = cv2.VideoCapture(path)
    source_fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    count = video_lib.resampled_frame_count(len(frames), source_fps, fps)
    picked = [frames[video_lib.resample_source_index(k, source_fps, fps)] for k in range(count)]
    crops = np.stack([video_lib.resize_and_crop(f) for f in picked])
    gray = [flow_lib.to_gray(c) for c in crops]
    solver = flow_lib.TVL1Flow(tvl1)
    flows = [flow_lib.flow_to_unit_range(solver(gray[i], gray[i + 1])) for i in range(count - 1)]
    flows.append(flows[-1])
    snippets = count // stride
    rgb = (crops[:snippets * stride].astype(np.float32) / 127.5 - 1).reshape(
        snippets, stride, 224, 224, 3)
    flow = np.stack(flows[:snippets * stride]).reshape(snippets, stride, 224, 224, 2)
    return (standin.standin_features_numpy(rgb, rgb_weights),
            standin.standin_features_numpy(flow, flow_weights), count, len(frames))


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    # 70 frames at 50 fps = 1.4 s. At 25 fps: 35 frames -> 2 stacks of 16 (3 trailing frames dropped).
    path = str(tmp_path_factory.mktemp("videos") / "tiny_clip.avi")
    write_video(path, textured_square_frames(70), fps=50)
    return path


def test_extract_video_matches_reference_and_metadata(models, tiny_video):
    rgb_model = i3d.FeatureModel(models["rgb_dir"], channels=3)
    flow_model = i3d.FeatureModel(models["flow_dir"], channels=2)
    result = pipeline.extract_video(tiny_video, rgb_model=rgb_model, flow_model=flow_model,
                                    config=fast(fps=25.0, stride_frames=16, batch_size=1))
    assert result.video_id == "tiny_clip"
    assert result.rgb.shape == (2, 1024) and result.flow.shape == (2, 1024)
    assert result.meta() == {"video_id": "tiny_clip", "fps": 25.0, "stride_frames": 16,
                             "num_frames": 35, "num_snippets": 2, "duration": pytest.approx(1.4)}
    # Snippet timing: each snippet covers 16 / 25 = 0.64 s, so 2 snippets end at 1.28 s <= 1.4 s.
    assert result.num_snippets * result.stride_frames / result.fps == pytest.approx(1.28)

    rgb_ref, flow_ref, count, source_count = reference_features(
        tiny_video, models["rgb_w"], models["flow_w"], 25.0, 16, FAST_TVL1)
    assert (count, source_count) == (35, 70)
    np.testing.assert_allclose(result.rgb, rgb_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.flow, flow_ref, rtol=1e-4, atol=1e-4)

    # Batching does not change the answer.
    batched = pipeline.extract_video(tiny_video, rgb_model=rgb_model, flow_model=flow_model,
                                     config=fast(fps=25.0, batch_size=3))
    np.testing.assert_allclose(batched.rgb, result.rgb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batched.flow, result.flow, rtol=1e-5, atol=1e-5)


def test_extract_video_upsampling_10fps_frames(models, tmp_path):
    # 20 frames at 10 fps = 2 s; at 25 fps that is 50 frames (each source frame 2 or 3 times),
    # 3 stacks. Repeated frames have zero motion.
    path = str(tmp_path / "slow.avi")
    write_video(path, textured_square_frames(20), fps=10)
    result = pipeline.extract_video(
        path, rgb_model=lambda s: s[..., :2].mean(axis=(2, 3)).reshape(len(s), -1),
        flow_model=lambda s: np.abs(s).mean(axis=(2, 3)).reshape(len(s), -1), config=fast(fps=25.0))
    assert (result.num_frames, result.num_snippets, result.duration) == (50, 3, pytest.approx(2.0))
    # Output k repeats source floor(k * 0.4): resampled frames 0,1,2 are source frame 0, so the
    # flows 0->1 and 1->2 are exactly zero, and 2->3 (source 0->1) is not.
    flow_magnitude = result.flow.reshape(3, 16, 2)
    assert flow_magnitude[0, 0].sum() == 0 and flow_magnitude[0, 1].sum() == 0
    assert flow_magnitude[0, 2].sum() > 0


def test_too_short_and_unreadable_videos(tmp_path):
    short = str(tmp_path / "short.avi")
    write_video(short, textured_square_frames(10), fps=25)
    dummy = lambda s: np.zeros((len(s), 4), np.float32)
    with pytest.raises(StpnError, match="only 10 frames"):
        pipeline.extract_video(short, rgb_model=dummy, flow_model=dummy, config=fast())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(StpnError, match="empty.mp4"):
        pipeline.extract_video(str(empty), rgb_model=dummy, flow_model=dummy)
    with pytest.raises(StpnError, match="not found"):
        pipeline.extract_video(str(tmp_path / "missing.mp4"), rgb_model=dummy, flow_model=dummy)


def test_run_extract_writes_layout_and_continues_after_failures(models, tiny_video, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(tiny_video, videos / "good.avi")
    (videos / "broken.avi").write_bytes(b"this is not a video")
    (videos / "notes.txt").write_text("ignored: not a video extension")
    out = str(tmp_path / "features")
    kwargs = dict(videos=[str(videos)], out=out, split="test", config=fast(batch_size=2),
                  models=pipeline.I3DModels(rgb_model=models["rgb_dir"], flow_model=models["flow_dir"]))
    assert pipeline.run_extract(**kwargs) == 1
    printed = capsys.readouterr().out
    assert "broken.avi" in printed and "1 videos written" in printed and "1 failed" in printed

    rgb = np.load(os.path.join(out, "test", "rgb", "good.npy"))
    flow = np.load(os.path.join(out, "test", "flow", "good.npy"))
    with open(os.path.join(out, "test", "meta", "good.json")) as handle:
        meta = json.load(handle)
    assert rgb.shape == flow.shape == (2, 1024) and rgb.dtype == np.float32
    assert meta["num_snippets"] == 2 and meta["num_frames"] == 35 and meta["stride_frames"] == 16
    assert not os.path.exists(os.path.join(out, "test", "rgb", "broken.npy"))
    leftovers = [n for d in ("rgb", "flow", "meta") for n in os.listdir(os.path.join(out, "test", d))
                 if n.startswith(".")]
    assert leftovers == []

    # A second run skips the finished video and still reports the broken one.
    assert pipeline.run_extract(**kwargs) == 1
    assert "1 already present" in capsys.readouterr().out


def test_expand_videos_rejects_collisions_and_empty_dirs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "clip.mp4").write_bytes(b"x")
    (tmp_path / "b" / "clip.avi").write_bytes(b"x")
    with pytest.raises(StpnError, match="collide"):
        pipeline.expand_videos([str(tmp_path / "a"), str(tmp_path / "b")])
    (tmp_path / "c").mkdir()
    with pytest.raises(StpnError, match="no video files"):
        pipeline.expand_videos([str(tmp_path / "c")])


# ---------------------------------------------------------------- localize_videos (stpn localize)


def test_localize_videos_with_export_or_workdir(models, tiny_video, tmp_path):
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.workflows import localize_videos as lv
    from stpn_tf.localize.config import LocalizerConfig
    from stpn_tf.inference.export import run_export

    workdir, export = str(tmp_path / "workdir"), str(tmp_path / "export")
    write_random_workdir(workdir, ["Diving", "HighJump", "PoleVault"], feature_dim=1024)
    # Small bounds (one slot branch below M in the serving graph): a smaller export, quicker to save and load.
    settings = LocalizerConfig(interpolation=4, max_detections=8, max_components_per_class=16)
    assert run_export(workdir=workdir, out=export, grid=GridConfig(length=16), localizer_config=settings,
                      jit_compile=False) == 0
    (tmp_path / "bad.mp4").write_bytes(b"")
    extract = dict(models=pipeline.I3DModels(rgb_model=models["rgb_dir"], flow_model=models["flow_dir"]),
                   extract=fast())
    out = str(tmp_path / "from_export")
    code = lv.localize_videos(videos=[tiny_video, str(tmp_path / "bad.mp4")], model_path=export, out_dir=out,
                              **extract)
    assert code == 1  # bad.mp4 failed, the tiny clip went through

    with open(os.path.join(out, "detections.json")) as handle:
        results = json.load(handle)
    assert list(results["results"]) == ["tiny_clip"]
    detections = results["results"]["tiny_clip"]
    assert detections  # the comparisons below cover real detections
    with open(os.path.join(out, "figures", "tiny_clip.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    # The JSON is the export's serving_default output on the extracted features, called directly.
    rgb = np.load(os.path.join(out, "features", "videos", "rgb", "tiny_clip.npy"))
    flow = np.load(os.path.join(out, "features", "videos", "flow", "tiny_clip.npy"))
    served = tf.saved_model.load(export).signatures["serving_default"](
        rgb=tf.constant(rgb[None]), flow=tf.constant(flow[None]), num_snippets=tf.constant([2]),
        seconds_per_snippet=tf.constant([0.64]))
    names = [n.decode() for n in served["class_names"].numpy()]
    k = int(served["num_detections"][0])
    assert [d["label"] for d in detections] == [names[c] for c in served["detection_classes"][0, :k].numpy()]
    np.testing.assert_allclose([d["score"] for d in detections], served["detection_scores"][0, :k], rtol=1e-6)
    np.testing.assert_allclose([d["segment"] for d in detections], served["detection_segments"][0, :k],
                               rtol=1e-6, atol=1e-6)
    for start, end in (d["segment"] for d in detections):
        # 2 snippets of 16 frames at 25 fps end at 1.28 s (the 1.4 s clip's last 3 frames fill no stack).
        assert 0.0 <= start < end <= 1.28 + 1e-6

    # A rerun reuses the kept features (same models and settings) and gives the same detections.
    stamp = os.stat(os.path.join(out, "features", "videos", "rgb", "tiny_clip.npy")).st_mtime_ns
    assert lv.localize_videos(videos=[tiny_video], model_path=export, out_dir=out, figures=False, **extract) == 0
    assert os.stat(os.path.join(out, "features", "videos", "rgb", "tiny_clip.npy")).st_mtime_ns == stamp
    with open(os.path.join(out, "detections.json")) as handle:
        assert json.load(handle)["results"]["tiny_clip"] == detections

    # The same through the training work directory (the graph built in memory with the same settings). The
    # features extracted above are copied in and reused (the run above showed the reuse), so the clip's TV-L1
    # flow is not computed again: what differs here is only the model path.
    out_workdir = str(tmp_path / "from_workdir")
    shutil.copytree(os.path.join(out, "features"), os.path.join(out_workdir, "features"))
    copied = os.path.join(out_workdir, "features", "videos", "rgb", "tiny_clip.npy")
    stamp = os.stat(copied).st_mtime_ns
    assert lv.localize_videos(videos=[tiny_video], model_path=workdir, out_dir=out_workdir, grid=GridConfig(length=16),
                              localizer_config=settings, jit_compile=False, figures=False, **extract) == 0
    assert os.stat(copied).st_mtime_ns == stamp  # reused
    with open(os.path.join(out_workdir, "detections.json")) as handle:
        from_workdir = json.load(handle)["results"]["tiny_clip"]
    assert [d["label"] for d in from_workdir] == [d["label"] for d in detections]
    np.testing.assert_allclose([d["score"] for d in from_workdir], [d["score"] for d in detections], rtol=1e-5)
    np.testing.assert_allclose([d["segment"] for d in from_workdir], [d["segment"] for d in detections],
                               rtol=1e-5, atol=1e-5)


def test_serving_model_errors(tmp_path):
    from stpn_tf.inference.runner import load_serving_model

    with pytest.raises(StpnError, match="neither an export directory"):
        load_serving_model(str(tmp_path / "nowhere"))
    # A SavedModel that is not an `stpn export` (no assets/stpn_export.json).
    tf.saved_model.save(tf.Module(), str(tmp_path / "other"))
    with pytest.raises(StpnError, match="stpn_export.json: missing"):
        load_serving_model(str(tmp_path / "other"))


# ---------------------------------------------------------------- reruns: the reuse rule (feature_dir.reuse_check)


def _meta(out, video_id="tiny_clip"):
    with open(os.path.join(out, "test", "meta", f"{video_id}.json")) as handle:
        return json.load(handle)


def test_rerun_reuses_only_complete_videos_with_the_same_fingerprint(models, tiny_video, tmp_path, capsys):
    out = str(tmp_path / "features")
    spec = pipeline.I3DModels(rgb_model=models["rgb_dir"], flow_model=models["flow_dir"])

    def run(models_spec=spec, **changes):
        code = pipeline.run_extract(videos=[tiny_video], out=out, split="test", models=models_spec,
                                    config=fast(**changes))
        assert code == 0
        return capsys.readouterr().out

    run()
    paths = {k: os.path.join(out, "test", k, f"tiny_clip.{'json' if k == 'meta' else 'npy'}")
             for k in ("rgb", "flow", "meta")}
    fingerprint = _meta(out)["fingerprint"]
    assert fingerprint["fps"] == 25.0 and fingerprint["stride_frames"] == 16 and fingerprint["crop_size"] == 224
    assert fingerprint["tvl1"]["scales"] == 2 and set(fingerprint["models"]) == {"rgb", "flow"}
    assert len(fingerprint["models"]["rgb"]["weights"]) == 16  # a hash of the variables index

    # Same models and settings: reused, not written again (the batch size does not change the features).
    stamp = os.stat(paths["rgb"]).st_mtime_ns
    assert "0 videos written, 1 already present" in run(batch_size=1)
    assert os.stat(paths["rgb"]).st_mtime_ns == stamp

    # A truncated npy: redone, with one line naming the file.
    with open(paths["flow"], "r+b") as handle:
        handle.truncate(200)
    printed = run()
    assert f"redo tiny_clip: {paths['flow']}: cannot load as a numpy array" in printed
    assert "1 videos written, 0 already present" in printed
    assert np.load(paths["flow"]).shape == (2, 1024)

    # Another RGB model (other weights, same shapes): its fingerprint differs, so the video is redone.
    other = str(tmp_path / "other_rgb")
    standin.build_standin_i3d(other, channels=3, seed=7)
    printed = run(pipeline.I3DModels(rgb_model=other, flow_model=models["flow_dir"]))
    assert f"redo tiny_clip: {paths['meta']}: made with other models or settings (models.rgb.weights: " in printed
    assert "1 videos written" in printed
    # Other TV-L1 options: redone too, naming the option.
    assert "(tvl1.warps: 1 -> 2)" in run(pipeline.I3DModels(rgb_model=other, flow_model=models["flow_dir"]),
                                         tvl1=dataclasses.replace(FAST_TVL1, warps=2))

    # A meta file from before fingerprints were recorded (the older layout): the models are unknown, redone.
    meta = _meta(out)
    del meta["fingerprint"]
    with open(paths["meta"], "w") as handle:
        json.dump(meta, handle)
    printed = run()
    assert f"redo tiny_clip: {paths['meta']}: records no fingerprint" in printed and "1 videos written" in printed
    assert _meta(out)["fingerprint"]["models"]["rgb"] == fingerprint["models"]["rgb"]

    # npy files without a meta file (a killed run): unfinished, redone.
    os.remove(paths["meta"])
    assert "missing (an unfinished video)" in run()


def test_fingerprint_difference_names_the_first_differing_key():
    from stpn_tf.artifacts.feature_dir import fingerprint_difference

    recorded = {"fps": 25, "models": {"rgb": {"weights": "a"}}, "streams": ["rgb", "flow"]}
    assert fingerprint_difference(recorded, {"fps": 25.0, "models": {"rgb": {"weights": "a"}},
                                             "streams": ("rgb", "flow")}) is None  # JSON lists, int vs float
    assert fingerprint_difference(recorded, {**recorded, "models": {"rgb": {"weights": "b"}}}) == \
        "models.rgb.weights: a -> b"
    assert fingerprint_difference(recorded, {**recorded, "crop_size": 224}) == "crop_size: null -> 224"


def test_rgb_only_extraction_computes_no_flow(models, tiny_video, tmp_path, monkeypatch):
    from stpn_tf.artifacts import feature_dir

    def no_flow(*args, **kwargs):
        raise AssertionError("optical flow computed for an RGB-only extraction")

    monkeypatch.setattr(flow_lib.TVL1Flow, "__call__", no_flow)
    out = str(tmp_path / "features")
    spec = pipeline.I3DModels(rgb_model=models["rgb_dir"])
    with pytest.raises(StpnError, match=r"no flow I3D is configured .*stpn i3d convert --source=.*--streams=rgb"):
        pipeline.run_extract(videos=[tiny_video], out=out, split="test", models=spec, config=fast())
    assert pipeline.run_extract(videos=[tiny_video], out=out, split="test", models=spec, config=fast(),
                                streams=("rgb",)) == 0
    assert sorted(os.listdir(os.path.join(out, "test"))) == ["meta", "rgb"]
    assert _meta(out)["streams"] == ["rgb"]
    rgb_only = feature_dir.read_video(out, "test", "tiny_clip", complete=True, streams=("rgb",))
    assert rgb_only.flow is None and rgb_only.rgb.shape == (2, 1024)
    with pytest.raises(StpnError, match="extracted with --streams=rgb"):
        feature_dir.read_video(out, "test", "tiny_clip")  # a two-stream reader (build-dataset)


def test_progress_lines_by_hand():
    now = [0.0]
    lines = []
    progress = pipeline.Progress([100, 50], report=lines.append, interval=5.0, clock=lambda: now[0])
    progress.start("a")
    now[0] = 2.0
    progress.update(16)  # within the interval: quiet
    now[0] = 10.0
    progress.update(40)  # 4 frames/s: 60 frames left of this video = 15 s, 110 of all = 27.5 s
    now[0] = 25.0
    progress.update(100)  # 15 s after the last line: 4 frames/s
    progress.finish(6)
    progress.start("b")
    now[0] = 35.0
    progress.update(50)
    progress.finish(3)
    assert lines == [
        "extract [1/2] a: 40/100 frames, 4.0 frames/s, about 15s left (all: 28s)",
        "extract [1/2] a: 100/100 frames, 4.0 frames/s, about 0s left (all: 12s)",
        "extract [1/2] a: 6 snippets from 100 frames in 25s, 4.0 frames/s, about 12s left for the other videos",
        "extract [2/2] b: 50/50 frames, 5.0 frames/s, about 0s left (all: 0s)",
        "extract [2/2] b: 3 snippets from 50 frames in 10s, 5.0 frames/s",
    ]


def test_localize_videos_checks_the_feature_size_before_reading_any_video(models, tiny_video, tmp_path,
                                                                          monkeypatch, capsys):
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.workflows import localize_videos as lv

    def no_video(*args, **kwargs):
        raise AssertionError("a video was decoded before the feature size was checked")

    workdir = str(tmp_path / "workdir")
    write_random_workdir(workdir, ["Diving", "HighJump"], feature_dim=1024)
    small = str(tmp_path / "rgb32")
    standin.build_standin_i3d(small, channels=3, feature_dim=32)
    monkeypatch.setattr(video_lib, "iter_frames", no_video)
    with pytest.raises(StpnError, match=rf"^{small}: the rgb I3D gives 32 values per snippet but {workdir} reads 1024"):
        lv.localize_videos(videos=[tiny_video], model_path=workdir, out_dir=str(tmp_path / "out"), extract=fast(),
                           models=pipeline.I3DModels(rgb_model=small, flow_model=models["flow_dir"]),
                           grid=GridConfig(length=16), jit_compile=False, figures=False)
    assert not (tmp_path / "out" / "features").exists()
    # RGB and flow models of different sizes are refused the same way in `stpn extract`.
    with pytest.raises(StpnError, match="the RGB I3D gives 32 values per snippet but the flow I3D 1024"):
        pipeline.run_extract(videos=[tiny_video], out=str(tmp_path / "f"), split="test", config=fast(),
                             models=pipeline.I3DModels(rgb_model=small, flow_model=models["flow_dir"]))


def test_localize_videos_with_a_model_on_rgb_alone_needs_no_flow(models, tiny_video, tmp_path, monkeypatch, capsys):
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.workflows import localize_videos as lv

    def no_flow(*args, **kwargs):
        raise AssertionError("optical flow computed for a model on RGB alone")

    monkeypatch.setattr(flow_lib.TVL1Flow, "__call__", no_flow)
    workdir, out = str(tmp_path / "workdir"), str(tmp_path / "out")
    write_random_workdir(workdir, ["Diving", "HighJump"], feature_dim=1024)
    rgb_only = pipeline.I3DModels(rgb_model=models["rgb_dir"])
    kwargs = dict(videos=[tiny_video], model_path=workdir, out_dir=out, models=rgb_only, extract=fast(),
                  grid=GridConfig(length=16), jit_compile=False, figures=False)
    with pytest.raises(StpnError, match="no flow I3D is configured"):  # both streams: the flow I3D is needed
        lv.localize_videos(**kwargs)
    assert lv.localize_videos(streams=["rgb"], **kwargs) == 0
    printed = capsys.readouterr().out
    assert f"features kept in {os.path.join(out, 'features', 'videos')}" in printed
    assert sorted(os.listdir(os.path.join(out, "features", "videos"))) == ["meta", "rgb"]
    with open(os.path.join(out, "detections.json")) as handle:
        assert list(json.load(handle)["results"]) == ["tiny_clip"]


def test_missing_flow_model_is_answered_before_tensorflow_loads(tmp_path):
    """In a fresh interpreter (this one has TensorFlow loaded): the one line comes without TensorFlow's start-up."""
    import subprocess
    import sys

    script = ("import sys\nfrom stpn_tf.cli import main\n"
              "code = main(['stpn', 'extract', 'v.mp4', '--out=o'])\n"
              "assert code == 2 and 'tensorflow' not in sys.modules, code\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert proc.stderr.strip().startswith("stpn extract: error: no flow I3D is configured")
    assert "stpn i3d convert --source=" in proc.stderr and "--streams=rgb" in proc.stderr

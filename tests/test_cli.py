"""The `stpn` command line end to end, each command in its own process as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

import numpy as np

from stpn_tf.extract.standin import build_standin_i3d
from tests.test_build_dataset import write_activitynet_release, write_basnet_release
from tests.test_extract import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [
    "--config.train.steps=12", "--config.train.steps_per_epoch=6", "--config.model.attention_units=8",
    "--config.train.num_snippets=16", "--config.localize.num_snippets=16", "--config.localize.interpolation=4",
]


def stpn(*args, expect=0):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "stpn_tf.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect, f"stpn {' '.join(args)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_demo_prints_both_tables(tmp_path):
    # No --config: `stpn demo` picks configs/demo.py and still takes --config.a.b overrides (README usage).
    proc = stpn("demo", f"--workdir={tmp_path}", *SMALL,
                "--config.synthetic.feature_dim=8", "--config.synthetic.max_snippets=40")
    out = proc.stdout
    assert "mAP (%) ActivityNet protocol" in out and "mAP (%) THUMOS14 toolkit" in out
    for row in ("RGB", "flow", "two-stream"):
        assert sum(line.startswith(row + " ") for line in out.splitlines()) == 2, row
    # Everything the demo writes stays in the work directory.
    for name in ("dataset/dataset.json", "rgb/model.keras", "flow/model.keras", "raw_test.npz",
                 "detections_rgb_flow.json", "config.demo.json"):
        assert os.path.exists(tmp_path / name), name


@pytest.mark.parametrize("release", ["thumos14_npy", "activitynet_h5"])
def test_build_train_localize_evaluate(tmp_path, release):
    if release == "thumos14_npy":
        files = write_basnet_release(str(tmp_path / "release"), num_train=6, num_test=4, feature_dim=8)
        config, protocol = "configs/thumos14.py", "both"
    else:
        files = write_activitynet_release(str(tmp_path / "release"), feature_dim=8)
        config, protocol = "configs/activitynet13.py", "activitynet"
    data, work = tmp_path / "dataset", tmp_path / "work"
    build_args = [f"--{k}={v}" for k, v in files.items()]
    stpn("build-dataset", f"--layout={release}", f"--out={data}", "--num_shards=2", *build_args)
    common = [f"--config={config}", f"--config.dataset.dir={data}", *SMALL]
    for stream in ("rgb", "flow"):
        stpn("train", f"--workdir={work}", f"--stream={stream}", *common)
    raw = tmp_path / "raw.npz"
    stpn("localize", f"--workdir={work}", f"--save_raw={raw}", *common)
    detections = json.loads((work / "detections.json").read_text())
    assert detections["version"] == "VERSION 1.3" and detections["results"]
    for dets in detections["results"].values():
        for d in dets:
            assert 0 <= d["segment"][0] <= d["segment"][1] and isinstance(d["label"], str)
    # The export holds both streams and the localization graph: same detections from the same TFRecords.
    export = tmp_path / "export"
    stpn("export", f"--workdir={work}", f"--out={export}", *common)
    exported = tmp_path / "exported.json"
    stpn("localize", f"--workdir={export}", f"--out={exported}", *common)
    via_export = json.loads(exported.read_text())["results"]
    assert via_export.keys() == detections["results"].keys()
    for video, dets in detections["results"].items():
        assert [d["label"] for d in via_export[video]] == [d["label"] for d in dets]
        for a, b in zip(via_export[video], dets):
            assert a["score"] == pytest.approx(b["score"], rel=1e-5, abs=1e-6)
            assert a["segment"] == pytest.approx(b["segment"], abs=1e-4)
    if release == "thumos14_npy":
        _extract_and_localize_a_video(tmp_path, export)
    out_json = tmp_path / "eval.json"
    proc = stpn("evaluate", f"--ground_truth={data}/ground_truth.json", "--subset=test",
                f"--predictions={work}/detections.json", f"--protocol={protocol}", f"--json_out={out_json}",
                f"--config={config}", "--unknown_labels_as_fp")  # the tiny test split lacks some classes
    assert "mAP" in proc.stdout
    results = json.loads(out_json.read_text())
    results = results if isinstance(results, list) else [results]
    assert all(0.0 <= r["average_mAP"] <= 1.0 for r in results)
    # The sweep runs on the saved raw outputs without the models.
    proc = stpn("localize", f"--raw={raw}", "--sweep", f"--ground_truth={data}/ground_truth.json", "--subset=test",
                "--unknown_labels_as_fp", *common, "--config.sweep.class_thresholds=(0.1,)", "--config.sweep.tcam_thresholds=(0.05,0.1)")
    assert proc.stdout.count("\n") >= 4 and "best:" in proc.stdout


def test_errors_are_one_line_with_exit_2(tmp_path):
    proc = stpn("evaluate", f"--ground_truth={tmp_path}/missing.json", f"--predictions={tmp_path}/p.json", expect=2)
    assert proc.stderr.strip().count("\n") == 0 and "missing.json" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = stpn("evaluate", f"--ground_truth={bad}", f"--predictions={bad}", expect=2)
    assert "bad.json" in proc.stderr and "Traceback" not in proc.stderr
    proc = stpn("train", f"--workdir={tmp_path}/w", expect=2)
    assert "--stream" in proc.stderr
    proc = stpn("nonsense", expect=2)
    assert "commands:" in proc.stderr
    # A typo in a config key: one line naming it, no traceback.
    proc = stpn("train", f"--workdir={tmp_path}/w", "--stream=rgb", "--config.trian.steps=3", expect=2)
    assert proc.stderr.strip().count("\n") == 0 and "trian" in proc.stderr and "Traceback" not in proc.stderr
    proc = stpn("train", f"--workdir={tmp_path}/w", "--stream=rgb", f"--config={tmp_path}/none.py", expect=2)
    assert "none.py" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def _extract_and_localize_a_video(tmp_path, export):
    """`stpn extract` and `stpn localize VIDEO` with stand-in I3D models (D = 8, as the export's streams)."""
    rng = np.random.default_rng(0)
    video = str(tmp_path / "clip.avi")
    write_video(video, rng.integers(0, 255, (40, 48, 64, 3), dtype=np.uint8), 25.0)  # 40 frames: 2 stacks
    models = []
    for name, channels in (("rgb", 3), ("flow", 2)):
        build_standin_i3d(str(tmp_path / f"i3d_{name}"), channels=channels, feature_dim=8)
        models.append(f"--config.extract.{name}_model={tmp_path / f'i3d_{name}'}")
    fast_flow = ["--config.extract.tvl1_scales=1", "--config.extract.tvl1_warps=1",
                 "--config.extract.tvl1_inner_iterations=2", "--config.extract.tvl1_outer_iterations=1"]
    features = tmp_path / "features"
    stpn("extract", video, f"--out={features}", "--split=test", *models, *fast_flow)
    for stream in ("rgb", "flow"):
        assert np.load(features / "test" / stream / "clip.npy").shape == (2, 8)
    meta = json.loads((features / "test" / "meta" / "clip.json").read_text())
    assert meta["num_snippets"] == 2 and meta["stride_frames"] == 16
    out = tmp_path / "localized"
    stpn("localize", video, f"--workdir={export}", f"--out={out}", *models, *fast_flow)
    assert "clip" in json.loads((out / "detections.json").read_text())["results"]
    assert os.path.exists(out / "figures" / "clip.png")

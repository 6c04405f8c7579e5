"""Beam pipelines in the DirectRunner's multi-process mode: the same bytes as the single-process runner, and
a rerun after a failed or killed pipeline redoes only the unfinished videos.

Skipped when apache-beam (the optional `beam` extra) is not installed. Each pipeline run in two worker
processes starts two Python interpreters that import TensorFlow, so these tests use few, tiny inputs.
"""

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam")

from stpn_tf.beam import extract as beam_extract
from stpn_tf.artifacts import detection_parts, feature_dir
from stpn_tf.beam import localize as beam_localize
from stpn_tf.core.errors import StpnError, WriteError
from stpn_tf.extract import pipeline, standin
from stpn_tf.extract.flow import TVL1Options
from tests.helpers.video import textured_square_frames, write_video
from tests.helpers.workdir import SMALL_D

TWO_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
FAST = pipeline.ExtractConfig(batch_size=2, tvl1=TVL1Options(scales=1, warps=1, inner_iterations=3,
                                                             outer_iterations=1))
VIDEO_IDS = ["clip_1", "clip_2", "clip_3", "clip_4", "clip_5"]


def _files(root):
    """Every file under `root` by relative path (hidden temporaries included, so leftovers show)."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def _assert_same_tree(a, b):
    assert _files(a) == _files(b)
    for name in _files(a):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name


def _stats(paths):
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths}


# ---------------------------------------------------------------- extraction + TFRecord building


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam_mp")
    standin.build_standin_i3d(str(root / "rgb"), channels=3)
    standin.build_standin_i3d(str(root / "flow"), channels=2)
    videos = root / "videos"
    videos.mkdir()
    for seed, video_id in enumerate(VIDEO_IDS):
        write_video(str(videos / f"{video_id}.avi"), textured_square_frames(34 + 16 * (seed % 2), seed=seed), fps=25)
    (videos / "clip_bad.avi").write_bytes(b"not a video")
    return root


def _extract(inputs, root, pipeline_args=(), **kwargs):
    return beam_extract.run_beam_extract(
        videos=[str(inputs / "videos")], out=str(root / "features"), dataset_dir=str(root / "dataset"),
        split="test", config=FAST, num_shards=3, pipeline_args=list(pipeline_args),
        models=pipeline.I3DModels(rgb_model=str(inputs / "rgb"), flow_model=str(inputs / "flow")), **kwargs)


@pytest.fixture(scope="module")
def single_extract(inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    assert _extract(inputs, root) == 1  # clip_bad fails
    return root


def test_extract_two_processes_equal_single_process(inputs, single_extract, tmp_path, capsys):
    # Shards an earlier build of this split left (other shard count, by_stream storage) are dropped.
    (tmp_path / "dataset").mkdir()
    for stale in ("test-00000-of-00005.tfrecord", "test-rgb-00000-of-00001.tfrecord",
                  "test-flow-00000-of-00001.tfrecord"):
        (tmp_path / "dataset" / stale).write_bytes(b"")
    assert _extract(inputs, tmp_path, TWO_PROCESSES) == 1
    assert "5 videos written, 1 failed (5 extracted, 0 already complete)" in capsys.readouterr().out
    # Byte for byte: every npy and meta file, every shard and dataset.json.
    _assert_same_tree(single_extract / "features", tmp_path / "features")
    _assert_same_tree(single_extract / "dataset", tmp_path / "dataset")
    names = sorted(os.listdir(tmp_path / "dataset"))
    assert names == ["dataset.json"] + [f"test-0000{i}-of-00003.tfrecord" for i in range(3)]
    info = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    assert info["splits"]["test"]["num_videos"] == 5
    # 34 frames give 2 snippets of 16, 50 frames 3: clips 1, 3, 5 have 2, clips 2, 4 have 3.
    assert info["splits"]["test"]["num_snippets"] == 2 + 3 + 2 + 3 + 2


def test_extract_rerun_after_failure_redoes_only_unfinished(inputs, single_extract, tmp_path, capsys):
    # A directory where clip_5's rgb npy goes makes its write fail (a WriteError, like a full disk), which
    # stops the pipeline: the worker that meets clip_5 stops there.
    blocker = tmp_path / "features" / "test" / "rgb" / "clip_5.npy"
    blocker.mkdir(parents=True)
    with pytest.raises(WriteError, match=r"^\S*clip_5.npy: cannot write it \(Is a directory\)"):
        _extract(inputs, tmp_path, TWO_PROCESSES)
    layout = {v: feature_dir.video_paths(str(tmp_path / "features"), "test", v) for v in VIDEO_IDS}
    finished = [v for v in VIDEO_IDS if os.path.exists(layout[v]["meta"])]
    assert "clip_5" not in finished and finished  # the other worker's videos are complete
    assert not (tmp_path / "dataset" / "dataset.json").exists()
    before = _stats([p for v in finished for p in layout[v].values()])
    blocker.rmdir()
    capsys.readouterr()

    # Rerun in one process (cheaper to start): what is reused does not depend on the runner.
    assert _extract(inputs, tmp_path) == 1
    out = capsys.readouterr().out
    assert (f"5 videos written, 1 failed ({5 - len(finished)} extracted, {len(finished)} already complete)"
            in out), out
    assert _stats(before) == before  # same inode and modification time: not written again
    _assert_same_tree(single_extract / "features", tmp_path / "features")
    _assert_same_tree(single_extract / "dataset", tmp_path / "dataset")


def test_extract_reuse_checks_outputs(inputs, single_extract, tmp_path):
    # A damaged or stale video is extracted again, a complete one is reused.
    shutil.copytree(single_extract / "features", tmp_path / "features")
    out = str(tmp_path / "features")
    models = pipeline.I3DModels(rgb_model=str(inputs / "rgb"), flow_model=str(inputs / "flow"))
    prints = pipeline.fingerprint(models, FAST)
    assert beam_extract.complete_features(out, "test", "clip_1", prints).num_snippets == 2
    assert beam_extract.complete_features(out, "test", "clip_2", prints).feature_dim == 1024
    with open(feature_dir.video_paths(out, "test", "clip_1")["flow"], "r+b") as handle:
        handle.truncate(200)
    assert beam_extract.complete_features(out, "test", "clip_1", prints) is None
    other_fps = pipeline.ExtractConfig(fps=10.0, batch_size=2, tvl1=FAST.tvl1)
    assert beam_extract.complete_features(out, "test", "clip_2", pipeline.fingerprint(models, other_fps)) is None
    assert beam_extract.complete_features(out, "test", "clip_bad", prints) is None


# ---------------------------------------------------------------- batch localization

D = SMALL_D
LENGTHS = [3, 7, 12, 1, 20, 5, 9, 4]  # eight videos, four batches of two


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("features"))
    rng = np.random.default_rng(11)
    for i, length in enumerate(LENGTHS):
        feature_dir.write_video(root, "test", feature_dir.VideoFeatures(
            video_id=f"v_{i}", rgb=rng.normal(0, 1, (length, D)).astype(np.float32),
            flow=rng.normal(0, 1, (length, D)).astype(np.float32), fps=25.0, stride_frames=16,
            num_frames=length * 16, duration=length * 0.64))
    return root


@pytest.fixture(scope="module")
def single_detections(small_export, features, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("single_localize") / "detections.json")
    assert beam_localize.run_beam_localize(features=features, split="test", export_dir=small_export, output=output,
                                           batch_size=2) == 0
    with open(output) as handle:
        results = json.load(handle)["results"]
    assert sorted(results) == [f"v_{i}" for i in range(len(LENGTHS))]
    assert sum(len(d) for d in results.values()) > 0  # the comparisons below cover real detections
    return output


def test_localize_two_processes_equal_single_process(small_export, features, single_detections, tmp_path, capsys):
    output = str(tmp_path / "detections.json")
    assert beam_localize.run_beam_localize(features=features, split="test", export_dir=small_export, output=output,
                                           batch_size=2, pipeline_args=TWO_PROCESSES) == 0
    assert "8 videos localized, 0 failed (0 reused from an earlier run)" in capsys.readouterr().out
    assert filecmp.cmp(output, single_detections, shallow=False)
    assert os.listdir(tmp_path) == ["detections.json"]  # the parts are gone, no temporary left


def _wait_for_parts(parts_dir, process, limit=240.0, quiet=3.0):
    """Waits until `parts_dir` holds parts and no new one came for `quiet` seconds; returns their names."""
    start = last_change = time.monotonic()
    seen: list[str] = []
    while time.monotonic() - start < limit:
        assert process.poll() is None, "the pipeline ended although one input blocks it"
        names = sorted(n for n in os.listdir(parts_dir) if n.endswith(".json")) if os.path.isdir(parts_dir) else []
        if names != seen:
            seen, last_change = names, time.monotonic()
        elif seen and time.monotonic() - last_change > quiet:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"no finished parts within {limit} s (have {seen})")


def test_localize_rerun_after_kill_redoes_only_unfinished(small_export, features, single_detections, tmp_path, capsys):
    root = tmp_path / "features"
    shutil.copytree(features, root)
    # v_7's rgb npy is a named pipe nobody writes: the worker reading that batch blocks there for good,
    # while the other worker finishes its batches. Then both are killed with SIGKILL.
    real = root / "test" / "rgb" / "v_7.npy"
    saved = real.read_bytes()
    real.unlink()
    os.mkfifo(real)
    output = tmp_path / "out" / "detections.json"
    parts_dir = tmp_path / "out" / "detections.json.parts"
    command = [sys.executable, "-m", "stpn_tf.beam.localize", f"--features={root}", f"--export_dir={small_export}",
               f"--output={output}", "--batch_size=2", "--", *TWO_PROCESSES]
    log = open(tmp_path / "killed_run.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        parts = _wait_for_parts(str(parts_dir), process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its two workers
        process.wait(timeout=60)
        log.close()
    assert not output.exists()
    assert "v_7.json" not in parts and len(parts) < len(LENGTHS)
    # Batches are (v_0, v_1), (v_2, v_3), ...: a batch with both parts is reused whole.
    done = [k for k in range(len(LENGTHS) // 2) if {f"v_{2 * k}.json", f"v_{2 * k + 1}.json"} <= set(parts)]
    assert done

    real.unlink()
    real.write_bytes(saved)
    # Rerun in one process (cheaper to start): the parts do not depend on the runner.
    assert beam_localize.run_beam_localize(features=str(root), split="test", export_dir=small_export,
                                           output=str(output), batch_size=2) == 0
    out = capsys.readouterr().out
    assert f"8 videos localized, 0 failed ({2 * len(done)} reused from an earlier run)" in out, out
    assert filecmp.cmp(output, single_detections, shallow=False)
    assert os.listdir(tmp_path / "out") == ["detections.json"]


def test_parts_are_checked(small_export, features, tmp_path):
    meta = feature_dir.video_paths(features, "test", "v_1")["meta"]
    fingerprint = detection_parts.model_fingerprint(small_export, 2)
    assert fingerprint != detection_parts.model_fingerprint(small_export, 4)  # the batching is part of it
    parts = str(tmp_path / "parts")
    detection_parts.write_part(parts, meta, fingerprint, detection_parts.input_state(meta), video_id="v_1",
                               detections=[])
    assert detection_parts.read_part(parts, meta, fingerprint) == {
        "model": fingerprint, "inputs": detection_parts.input_state(meta), "video_id": "v_1", "detections": []}
    assert detection_parts.read_part(parts, meta, detection_parts.model_fingerprint(small_export, 4)) is None
    with open(os.path.join(parts, "v_1.json"), "w") as handle:
        handle.write('{"model": "')  # cut short
    assert detection_parts.read_part(parts, meta, fingerprint) is None
    with pytest.raises(StpnError, match="batch_size must be >= 1"):
        beam_localize.run_beam_localize(features=features, split="test", export_dir=small_export,
                                        output=str(tmp_path / "d.json"), batch_size=0)

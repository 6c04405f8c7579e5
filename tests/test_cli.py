"""The `stpn` command line end to end: commands run in this process through the same entry point
(`stpn_tf.cli.main`), and in processes of their own where only a real process shows the behaviour (exit
codes and the whole of stderr, TensorFlow's native start-up lines, a closed pipe). The commands on the demo's
work directory are tested in tests/test_demo.py (one demo run for both)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from stpn_tf.extract.standin import build_standin_i3d
from tests.helpers.cli import SMALL, cli, one_error_line, stpn
from tests.helpers.releases import write_activitynet_release, write_basnet_release
from tests.helpers.video import write_video


@pytest.mark.parametrize("release", ["thumos14_npy", "activitynet_h5"])
def test_build_train_localize_evaluate(tmp_path, release):
    if release == "thumos14_npy":
        files = write_basnet_release(str(tmp_path / "release"), num_train=6, num_test=4, feature_dim=8)
        config, protocol = "thumos14", "both"
    else:
        files = write_activitynet_release(str(tmp_path / "release"), feature_dim=8)
        config, protocol = "activitynet13", "activitynet"
    data, work = tmp_path / "dataset", tmp_path / "work"
    build_args = [f"--{k}={v}" for k, v in files.items()]
    # One release in each TFRecord storage: the rest of the run is the same on both.
    storage = "by_stream" if release == "thumos14_npy" else "combined"
    cli("build-dataset", f"--layout={release}", f"--out={data}", "--num_shards=2", f"--storage={storage}", *build_args)
    shards = sorted(name for name in os.listdir(data) if name.startswith("train-"))
    assert shards == ([f"train-{s}-0000{i}-of-00002.tfrecord" for s in ("flow", "rgb") for i in (0, 1)]
                      if storage == "by_stream" else [f"train-0000{i}-of-00002.tfrecord" for i in (0, 1)])
    common = [f"--config={config}", f"--config.dataset.dir={data}", *SMALL]
    cli("train", f"--workdir={work}", "--stream=rgb", *common)
    cli("train", f"--workdir={work}", "--stream=flow", *SMALL)  # the work directory's recorded config
    assert json.loads((work / "config.train.flow.json").read_text())["dataset"]["dir"] == str(data)
    raw = tmp_path / "raw.npz"
    proc = cli("localize", f"--workdir={work}", f"--save_raw={raw}")
    assert f"mAP of these detections: stpn evaluate --workdir={work}" in proc.stdout  # what the evaluate call below runs
    detections = json.loads((work / "detections.json").read_text())
    assert detections["version"] == "VERSION 1.3" and detections["results"]
    for dets in detections["results"].values():
        for d in dets:
            assert 0 <= d["segment"][0] <= d["segment"][1] and isinstance(d["label"], str)
    if release == "activitynet_h5":
        # The export holds both streams and the localization graph: the same detections from the same TFRecords
        # (the thumos14 release exports with non-default options, in _tune_and_export_options).
        export = tmp_path / "export"
        cli("export", f"--workdir={work}", f"--out={export}")
        exported = tmp_path / "exported.json"
        cli("localize", f"--workdir={export}", f"--out={exported}")
        assert json.loads(exported.read_text()) == detections
    # Localizing the saved raw outputs again with the same settings reproduces them too.
    again = tmp_path / "again.json"
    cli("localize", f"--raw={raw}", f"--out={again}", *common)
    assert json.loads(again.read_text()) == detections
    out_json = tmp_path / "eval.json"
    proc = cli("evaluate", f"--ground_truth={data}/ground_truth.json", "--subset=test",
                f"--predictions={work}/detections.json", f"--protocol={protocol}", f"--json_out={out_json}",
                f"--config={config}", "--unknown_labels_as_fp")  # the tiny test split lacks some classes
    assert "mAP" in proc.stdout
    results = json.loads(out_json.read_text())
    results = results if isinstance(results, list) else [results]
    assert all(0.0 <= r["average_mAP"] <= 1.0 for r in results)
    # --workdir alone: its detections.json against its dataset's ground truth and test split, the same numbers.
    from_workdir = tmp_path / "eval_workdir.json"
    cli("evaluate", f"--workdir={work}", f"--json_out={from_workdir}", "--unknown_labels_as_fp")
    assert json.loads(from_workdir.read_text()) == json.loads(out_json.read_text())
    proc = cli("evaluate", f"--workdir={tmp_path / 'nowhere'}", expect=2)
    one_error_line(proc, "nowhere: no such work directory")
    # The sweep runs on the saved raw outputs without the models, and saves its table beside them.
    # --subset and --ground_truth default to what the raw file records: the localized split of the dataset.
    proc = cli("localize", f"--raw={raw}", "--sweep", "--unknown_labels_as_fp", *common,
               "--config.sweep.class_thresholds=(0.1,)", "--config.sweep.tcam_thresholds=(0.05,0.1)")
    assert proc.stdout.count("\n") >= 4 and "best:" in proc.stdout
    assert len(json.loads((tmp_path / "sweep.json").read_text())["rows"]) == 2
    if release == "thumos14_npy":
        _tune_and_export_options(tmp_path, work, common)


def _tune_and_export_options(tmp_path, work, common):
    # Tuning on the test split is refused unless asked for by name, and writes nothing.
    proc = cli("tune", f"--workdir={work}", "--split=test", expect=2)
    one_error_line(proc, "refusing to tune on the test split", "--allow_tuning_on_test")
    assert not (work / "tuned_config.py").exists()
    space = {"proposals": "('paper','multi')", "scoring": "('mean','oic')", "nms": "('hard',)",
             "class_threshold": "(0.1,0.3)", "tcam_threshold": "(0.05,)", "alpha": "(0.5,)", "oic_gamma": "(0.2,)",
             "nms_threshold": "(0.5,)", "soft_nms_sigma": "(0.3,)", "proposal_streams": "('both','flow')",
             "all_snippets": "(False,True)", "oic_margin": "(0.25,)", "min_score": "(0.05,)",
             "detections_per_video": "(0,)"}

    def tune_flags(**changes):  # each flag once: of a repeated --config flag only the first counts
        return [f"--config.tune.space.{key}={value}" for key, value in {**space, **changes}.items()] + [
            "--config.tune.rounds=1", "--unknown_labels_as_fp"]

    small_space = tune_flags()
    proc = cli("tune", f"--workdir={work}", *small_space)
    assert "temporal annotations" in proc.stdout and "paper default" in proc.stdout
    report = json.loads((work / "tune.json").read_text())
    assert report["tuned_on"] == "train" and not report["tuned_on_test_split"]
    # Per grid choice: start, 4 joint combinations but the start's, 1 more stream, 1 more class threshold,
    # 1 min_score (the margin and detections_per_video listed are the current values).
    assert report["all_snippets"] == [False, True] and len(report["history"]) == 2 * (1 + 4 - 1 + 1 + 1 + 1)
    assert {row["all_snippets"] for row in report["history"]} == {False, True}
    assert isinstance(report["chosen_all_snippets"], bool)
    tuned = work / "tuned_config.py"
    assert "config.localize.scoring" in tuned.read_text() and "config.localize.all_snippets" in tuned.read_text()
    # min_score's -inf (off) or the chosen 0.05, written so that Python reads it back.
    assert "config.localize.min_score = float('-inf')" in tuned.read_text() or \
        "config.localize.min_score = 0.05" in tuned.read_text()
    # The tuned file keeps the run's other values (its small grid) and localizes.
    cli("localize", f"--workdir={work}", f"--config={tuned}", f"--out={tmp_path}/tuned.json")
    # On the test split only by name, and labelled (the labels are the point: a search of one grid, few settings).
    proc = cli("tune", f"--workdir={work}", "--split=test", "--allow_tuning_on_test", f"--out={tmp_path}/t.py",
               *tune_flags(proposals="('paper',)", all_snippets="(False,)", scoring="('mean',)",
                           proposal_streams="('both',)", class_threshold="(0.1,)"))
    assert "TUNED ON THE TEST SPLIT" in proc.stdout and "THE TEST SPLIT" in (tmp_path / "t.py").read_text()
    assert json.loads((work / "tune.json").read_text())["tuned_on_test_split"]
    # An export carries non-default options: the SavedModel reproduces `stpn localize` with them exactly.
    options = ["--config.localize.proposal_thresholds=(0.05,0.1,0.2)", "--config.localize.scoring=oic",
               "--config.localize.nms=soft", "--config.localize.class_threshold=0.2"]
    cli("localize", f"--workdir={work}", f"--out={tmp_path}/options.json", *common, *options)
    export = tmp_path / "export_options"
    cli("export", f"--workdir={work}", f"--out={export}", *common, *options)
    cli("localize", f"--workdir={export}", f"--out={tmp_path}/options_export.json")
    expected = json.loads((tmp_path / "options.json").read_text())
    assert expected["results"] and json.loads((tmp_path / "options_export.json").read_text()) == expected
    info = json.loads((export / "assets" / "stpn_export.json").read_text())
    assert info["localize"]["scoring"] == "oic" and info["localize"]["nms"] == "soft"
    _extract_and_localize_a_video(tmp_path, export)


def test_errors_are_one_line_with_exit_2(tmp_path):
    # The first two in processes of their own: the exit code and the whole of stderr as a user sees them.
    proc = stpn("evaluate", f"--ground_truth={tmp_path}/missing.json", f"--predictions={tmp_path}/p.json", expect=2)
    one_error_line(proc, "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = stpn("evaluate", f"--ground_truth={bad}", f"--predictions={bad}", expect=2)
    one_error_line(proc, "bad.json")
    proc = cli("train", f"--workdir={tmp_path}/w", expect=2)
    one_error_line(proc, "--stream")
    # A typo in a config key names it and the key meant.
    proc = cli("train", f"--workdir={tmp_path}/w", "--stream=rgb", "--config.train.step=3", expect=2)
    one_error_line(proc, "unknown config key --config.train.step", "did you mean --config.train.steps?")
    # A key given twice (ml_collections would join two tuples into one) is refused.
    proc = cli("localize", f"--workdir={tmp_path}/w", "--config.tune.space.alpha=(0.5,)",
               "--config.tune.space.alpha=(0.7,)", expect=2)
    one_error_line(proc, "--config.tune.space.alpha is given twice")
    proc = cli("train", f"--workdir={tmp_path}/w", "--stream=rgb", f"--config={tmp_path}/none.py", expect=2)
    one_error_line(proc, "none.py: config file not found")
    # A flag of another command is an unknown flag here.
    proc = cli("train", f"--workdir={tmp_path}/w", "--stream=rgb", "--layout=thumos14_npy", expect=2)
    one_error_line(proc, "Unknown command line flag 'layout'")
    proc = cli("localize", f"--workdir={tmp_path}/nonexistent", expect=2)
    one_error_line(proc, "nonexistent: no such work directory")
    # No dataset: said before training is announced, with both ways to give one.
    proc = cli("train", "--config=thumos14", f"--workdir={tmp_path}/w", "--stream=rgb",
               f"--config.dataset.dir={tmp_path}/no_dataset", expect=2)
    one_error_line(proc, "no_dataset: dataset directory not found", "--config.dataset.dir=DIR", "stpn build-dataset")
    assert "training" not in proc.stdout
    # Refused runs write nothing: a bad training setting stops the demo before its dataset is written.
    proc = cli("demo", f"--workdir={tmp_path}/d", "--config.train.batch_size=0", expect=2)
    one_error_line(proc, "train.batch_size must be a positive integer")
    assert not (tmp_path / "w").exists() and not (tmp_path / "d").exists()


def test_help_and_unknown_commands(tmp_path):
    proc = stpn("trian", expect=2)  # a process of its own: the real exit code and stderr
    one_error_line(proc, "unknown command 'trian'", "did you mean 'train'?")
    overview = cli("--help", cwd=str(tmp_path)).stdout
    for name in ("demo", "build-dataset", "train", "localize", "evaluate", "export", "extract"):
        assert f"\n  {name} " in overview, name
    full = cli("--helpfull").stdout
    assert all(f"usage: stpn {name}" in full for name in ("demo", "build-dataset", "train", "localize", "evaluate",
                                                           "export", "extract"))
    # Per-command help: its purpose, usage and only its own flags.
    for flag in ("-h", "--help"):
        text = cli("build-dataset", flag).stdout
        assert text.startswith("stpn build-dataset: ") and "usage: stpn build-dataset" in text
        for own in ("--layout", "--annotations", "--features", "--out", "--allow_pickle", "--snippet_time"):
            assert own in text, own
        for other in ("--stream", "--workdir", "--ground_truth", "--config"):
            assert other not in text, other
    train = cli("train", "-h").stdout
    assert "--stream=rgb|flow|joint" in train and "--layout" not in train and "train.steps=24000" in train


def test_help_keeps_long_flags_apart_from_their_text():
    """The longest flag of every command: its text starts on the next line, or two spaces after it."""
    from stpn_tf.cli import COMMANDS

    for name, command in COMMANDS.items():
        text = cli(name, "--help").stdout
        fv = flags.FlagValues()
        command.define(fv)
        longest = max(fv, key=len)
        line = next(line for line in text.splitlines() if line.startswith(f"  --{longest}"))
        head = line.split()[0]
        assert line == f"  {head}" or line.startswith(f"  {head}  "), (name, line)


def test_checks_run_before_tensorflow_loads(repo_dir):
    """A missing file, a missing dataset and every help are answered without importing TensorFlow (in a fresh
    interpreter: this test process has TensorFlow loaded already)."""
    script = """if True:
        import contextlib, io, sys
        from stpn_tf.cli import COMMANDS, main
        def run(*args):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return main(["stpn", *args])
        assert run("evaluate", "--ground_truth=/nonexistent", "--predictions=/nonexistent") == 2
        assert run("train", "--workdir=/nonexistent/w", "--stream=rgb", "--config.dataset.dir=/nonexistent") == 2
        assert run("localize", "--raw=/nonexistent.npz") == 2
        assert run("--help") == 0 and all(run(name, "--help") == 0 for name in COMMANDS)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("ok")
    """
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo_dir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


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
    cli("extract", video, f"--out={features}", "--split=test", *models, *fast_flow)
    for stream in ("rgb", "flow"):
        assert np.load(features / "test" / stream / "clip.npy").shape == (2, 8)
    meta = json.loads((features / "test" / "meta" / "clip.json").read_text())
    assert meta["num_snippets"] == 2 and meta["stride_frames"] == 16
    out = tmp_path / "localized"
    proc = cli("localize", video, f"--workdir={export}", f"--out={out}", *models, *fast_flow)
    assert "localize: 1 video localized (" in proc.stdout  # not "1 videos"
    assert "clip" in json.loads((out / "detections.json").read_text())["results"]
    assert os.path.exists(out / "figures" / "clip.png")


def test_help_into_a_closed_pipe_is_quiet(repo_dir):
    """`stpn localize --help | head -1`: the reader closes the pipe first; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # closed before the command writes: its first write gets EPIPE
    proc = subprocess.run([sys.executable, "-m", "stpn_tf.cli", "localize", "--help"], cwd=repo_dir, stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr

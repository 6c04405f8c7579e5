"""`stpn demo` as a newcomer meets it: output holding only the project's lines, both tables printed and saved,
a work directory that the later commands (localize, export, localize --raw) need no other flag with, warnings
once and naming the stream, a rerun that may change localization but not training, a work directory that can
be copied. One demo run serves every test here (tests that change the work directory come last)."""

import contextlib
import io
import json
import os
import re
import shutil

import pytest
from absl import logging as absl_logging

from stpn_tf.cli import main
from tests.helpers.cli import SMALL, cli, one_error_line, stpn

TINY = ("--config.train.steps=9", "--config.model.attention_units=8", "--config.train.num_snippets=16",
        "--config.localize.num_snippets=16", "--config.localize.interpolation=4",
        "--config.localize.max_detections=64", "--config.localize.max_components_per_class=16",
        "--config.synthetic.feature_dim=8", "--config.synthetic.max_snippets=40")
# Lines that are not the project's: absl's prefix (I1203 21:18:17.814368 ... file.py:353]), TensorFlow's
# retracing warning, SavedModel internals.
FOREIGN = re.compile(r"^[IWEF]\d{4} |retracing|Sharding callback duration")


def run(*args, expect=0, cwd=None):
    """`stpn args` in this process with stdout, stderr and the absl log handler's stream captured (the
    handler keeps the stream it was made with, so it is pointed at the capture for the call); `cwd`: the
    working directory during the call."""
    out, err = io.StringIO(), io.StringIO()
    handler = absl_logging.get_absl_handler().python_handler
    previous, previous_cwd = handler.stream, os.getcwd()
    handler.setStream(err)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["stpn", *args])
    finally:
        handler.setStream(previous)
        os.chdir(previous_cwd)
    assert code == expect, f"stpn {' '.join(args)}\nstdout:\n{out.getvalue()}\nstderr:\n{err.getvalue()}"
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`stpn demo` with the README's kind of override: 9 steps, while an epoch is 1000 (a shorter epoch), run
    from another directory."""
    workdir = tmp_path_factory.mktemp("demo") / "work"
    out, err = run("demo", f"--workdir={workdir}", *TINY, cwd=str(tmp_path_factory.mktemp("elsewhere")))
    return workdir, out, err


def test_default_output_is_the_projects_own(demo):
    _, out, err = demo
    assert "[demo] training the rgb stream (9 steps)" in out
    # The project's own log lines stay, plain ("1 epoch", not "1 epochs").
    assert "training rgb stream: 9 steps (1 epoch of 1000, the last of 9)" in err
    foreign = [line for line in (out + err).splitlines() if FOREIGN.search(line)]
    assert not foreign, foreign


def test_demo_prints_and_saves_both_tables(demo):
    workdir, out, _ = demo
    assert "mAP (%) ActivityNet protocol" in out and "mAP (%) THUMOS14 toolkit" in out
    for row in ("RGB", "flow", "two-stream"):
        assert sum(line.startswith(row + " ") for line in out.splitlines()) == 2, row
    # Everything the demo writes stays in the work directory, the tables too.
    for name in ("dataset/dataset.json", "rgb/model.keras", "flow/model.keras", "raw_test.npz",
                 "detections_rgb_flow.json", "config.demo.json", "workdir.json", "results.txt", "results.json"):
        assert os.path.exists(workdir / name), name
    assert (workdir / "results.txt").read_text().strip() in out
    tables = json.loads((workdir / "results.json").read_text())
    assert set(tables) == {"activitynet", "th14kit"} and set(tables["activitynet"]) == {"RGB", "flow", "two-stream"}
    # 9 steps with epochs of 1000: one short epoch, no refusal.
    assert "Epoch 1/1 - 9 steps - " in out


def test_workdir_needs_no_other_flag(demo, tmp_path):
    """The demo's work directory knows its dataset and config: localize and export need nothing else, the
    export records the demo's settings, and every path gives the demo's own two-stream detections."""
    workdir, _, _ = demo
    demo_detections = json.loads((workdir / "detections_rgb_flow.json").read_text())
    (workdir / "detections.json").unlink(missing_ok=True)
    cli("localize", f"--workdir={workdir}", cwd=str(tmp_path))  # from another directory
    assert json.loads((workdir / "detections.json").read_text()) == demo_detections

    export = tmp_path / "export"
    proc = stpn("export", f"--workdir={workdir}", f"--out={export}")
    # No absl lines and no TensorFlow start-up lines (native ones such as cudart / cuInit: only a process of its
    # own shows them; every command imports TensorFlow through the same quiet import).
    assert proc.stderr.strip() == "", proc.stderr
    assert proc.stdout.startswith(f"SavedModel written to {export}")
    recorded = json.loads((workdir / "config.export.json").read_text())
    assert recorded["synthetic"]["feature_dim"] == 8 and recorded["model"]["attention_units"] == 8
    assert recorded["localize"]["interpolation"] == 4 and recorded["train"]["steps"] == 9
    info = json.loads((export / "assets" / "stpn_export.json").read_text())
    assert info["feature_dim"] == 8 and info["grid_length"] == 16 and info["localize"]["interpolation"] == 4

    # An export gets no outputs written into it: --out is required, and a refusal writes nothing.
    before = sorted(os.listdir(export))
    proc = cli("localize", f"--workdir={export}", expect=2)
    one_error_line(proc, "pass --out=FILE")
    proc = cli("localize", f"--workdir={export}", f"--out={export}/assets/d.json", expect=2)
    one_error_line(proc, "outputs never go into an export")
    assert sorted(os.listdir(export)) == before
    # An export's localization settings are part of its graph: a different one is refused, naming the setting
    # and the re-export (features and videos alike); the recorded value, or a batch size, is accepted.
    for video in ([], [str(tmp_path / "clip.mp4")]):
        proc = cli("localize", *video, f"--workdir={export}", f"--out={tmp_path}/x",
                   "--config.localize.class_threshold=0.5", expect=2)
        one_error_line(proc, "--config.localize.class_threshold=0.5", "re-export with `stpn export", str(workdir))
    assert not (tmp_path / "x").exists()
    out = tmp_path / "from_export.json"
    cli("localize", f"--workdir={export}", f"--out={out}", "--config.localize.interpolation=4",
        "--config.localize.batch_size=5")
    assert json.loads(out.read_text()) == demo_detections


def test_raw_outputs_know_their_split_and_keep_detections(demo):
    """`--raw --sweep` defaults to the split and ground truth the raw file records; `--raw` without --out
    writes beside the raw file, never over the work directory's detections.json."""
    workdir, _, _ = demo
    (workdir / "detections.json").write_text("models' own detections")
    small = [a for a in SMALL if a.startswith("--config.localize.")]
    proc = cli("localize", f"--raw={workdir}/raw_test.npz", "--sweep", *small,
               "--config.sweep.class_thresholds=(0.1,)", "--config.sweep.tcam_thresholds=(0.05,)")
    assert "the ground truth is 212 videos" in proc.stdout and "best:" in proc.stdout
    proc = cli("localize", f"--raw={workdir}/raw_test.npz", *small, "--config.localize.class_threshold=0.5")
    assert (workdir / "detections.json").read_text() == "models' own detections"
    again = json.loads((workdir / "raw_test.detections.json").read_text())
    assert str(workdir / "raw_test.detections.json") in proc.stdout and len(again["results"]) == 212


def test_verbose_shows_absl_lines(demo, tmp_path):
    workdir, _, _ = demo
    # --verbose shows the rest, in absl's format (here the progress line of localize).
    _, err = run("localize", f"--workdir={workdir}", f"--out={tmp_path / 'd.json'}", "--verbose")
    assert re.search(r"^I\d{4} .*localize: \d+/\d+ videos", err, re.M), err


def test_a_copied_work_directory_works_without_the_original(demo, tmp_path):
    workdir, _, _ = demo
    original, copy = tmp_path / "original", tmp_path / "moved" / "copy"
    shutil.copytree(workdir, original)
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    record = json.loads((copy / "workdir.json").read_text())
    assert record["dataset_dir"] == "./dataset" and record["config"]["dataset"]["dir"] == "./dataset"
    (copy / "detections.json").unlink(missing_ok=True)
    cli("localize", f"--workdir={copy}", cwd=str(tmp_path))
    assert json.loads((copy / "detections.json").read_text())["results"]


# Last: it rewrites the work directory's config record and detections.
def test_rerun_may_change_localization_not_training(demo):
    workdir, _, _ = demo
    before = {name: (workdir / name).read_text() for name in ("workdir.json", "config.demo.json")}
    out, err = run("demo", f"--workdir={workdir}", "--config.train.steps=300", expect=2)
    assert out == "" and err.count("\n") == 1, err
    for needle in ("config.train.steps=9", "config.train.steps=300", "use a new --workdir"):
        assert needle in err, needle
    assert {name: (workdir / name).read_text() for name in before} == before  # nothing rewritten

    # A localization setting may change: the models are reused. At a class threshold this high, some videos
    # get no detections: the warning comes once per row and names its stream.
    out, err = run("demo", f"--workdir={workdir}", "--config.localize.class_threshold=0.6")
    assert "reusing the trained rgb model" in out
    warnings = [line for line in out.splitlines() if "warning" in line]
    assert warnings and len(warnings) == len(set(warnings)) <= 3, out
    assert {re.search(r"(RGB|flow|two-stream) detections", w).group(1) for w in warnings} <= {"RGB", "flow",
                                                                                             "two-stream"}
    assert all("detections_" in w for w in warnings)
    assert json.loads((workdir / "config.demo.json").read_text())["localize"]["class_threshold"] == 0.6
    assert json.loads((workdir / "config.demo.json").read_text())["train"]["steps"] == 9

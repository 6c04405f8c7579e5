"""`stpn demo` as a newcomer meets it: output holding only the project's lines, warnings once and naming
the stream, a rerun that may change localization but not training, a work directory that can be copied."""

import contextlib
import io
import json
import re
import shutil

import pytest
from absl import logging as absl_logging

from stpn_tf.cli import main
from tests.helpers.cli import cli, stpn

TINY = ("--config.train.steps=9", "--config.model.attention_units=8", "--config.train.num_snippets=16",
        "--config.localize.num_snippets=16", "--config.localize.interpolation=4",
        "--config.localize.max_detections=64", "--config.localize.max_components_per_class=16",
        "--config.synthetic.feature_dim=8", "--config.synthetic.max_snippets=40")
# Lines that are not the project's: absl's prefix (I1203 21:18:17.814368 ... file.py:353]), TensorFlow's
# retracing warning, SavedModel internals.
FOREIGN = re.compile(r"^[IWEF]\d{4} |retracing|Sharding callback duration")


def run(*args, expect=0):
    """`stpn args` in this process with stdout, stderr and the absl log handler's stream captured (the
    handler keeps the stream it was made with, so it is pointed at the capture for the call)."""
    out, err = io.StringIO(), io.StringIO()
    handler = absl_logging.get_absl_handler().python_handler
    previous = handler.stream
    handler.setStream(err)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["stpn", *args])
    finally:
        handler.setStream(previous)
    assert code == expect, f"stpn {' '.join(args)}\nstdout:\n{out.getvalue()}\nstderr:\n{err.getvalue()}"
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo") / "work"
    out, err = run("demo", f"--workdir={workdir}", *TINY)
    return workdir, out, err


def test_default_output_is_the_projects_own(demo):
    _, out, err = demo
    assert "[demo] training the rgb stream (9 steps)" in out
    # The project's own log lines stay, plain ("1 epoch", not "1 epochs").
    assert "training rgb stream: 9 steps (1 epoch of 1000, the last of 9)" in err
    foreign = [line for line in (out + err).splitlines() if FOREIGN.search(line)]
    assert not foreign, foreign


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


def test_export_output(demo, tmp_path):
    workdir, _, _ = demo
    proc = stpn("export", f"--workdir={workdir}", f"--out={tmp_path / 'e1'}")
    assert proc.stderr.strip() == "", proc.stderr  # no absl or TensorFlow lines (a process of its own)
    assert proc.stdout.startswith(f"SavedModel written to {tmp_path / 'e1'}")
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

"""Running `stpn`: in this process (fast: no TensorFlow start-up per call) or in a process of its own (what
only a real process shows: its exit code and whole stderr, signals, file-size limits)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys

from stpn_tf.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A small model, training schedule and localization grid for end-to-end runs.
SMALL = [
    "--config.train.steps=12", "--config.train.steps_per_epoch=6", "--config.model.attention_units=8",
    "--config.train.num_snippets=16", "--config.localize.num_snippets=16", "--config.localize.interpolation=4",
    # Small bounds: cheaper XLA compiles of the localization (a 16-position grid cannot exceed them anyway).
    "--config.localize.max_detections=64", "--config.localize.max_components_per_class=16",
]


def stpn_command(*args: str) -> list[str]:
    """The argv of `stpn args` through the real entry point (`python -m stpn_tf.cli`)."""
    return [sys.executable, "-m", "stpn_tf.cli", *args]


def stpn(*args: str, expect: int | None = 0, cwd: str = REPO, file_limit: int | None = None, env: dict | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    """`stpn args` in its own process, exactly as a user runs it.

    Args:
      args: The command line after `stpn`.
      expect: The exit code asserted (with both streams in the message); None: not checked.
      cwd: Working directory of the process.
      file_limit: A file-size limit in bytes (RLIMIT_FSIZE, what `ulimit -f` sets) on the process alone: a
        write past it fails with EFBIG ("File too large"), as a full disk fails with ENOSPC.
      env: Extra environment variables.
      timeout: Seconds before the process is killed (and the test fails).
    """
    command = stpn_command(*args)
    if file_limit is not None:
        # util-linux's prlimit sets the limit and executes the command. Not a preexec_fn: that runs between fork
        # and exec in a copy of this heavily threaded process (TensorFlow, Beam's gRPC), which Python documents
        # as unsafe (the child can deadlock or die before exec).
        command = ["prlimit", f"--fsize={int(file_limit)}:{int(file_limit)}", "--", *command]
    proc = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if expect is not None:
        assert proc.returncode == expect, \
            f"stpn {' '.join(args)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def cli(*args: str, expect: int = 0, cwd: str | None = None) -> subprocess.CompletedProcess:
    """`stpn args` through the same entry point (`stpn_tf.cli.main`) in this process.

    Every command parses its own flags afresh, so calls do not leak into each other. Python-level output is
    captured (TensorFlow's native log lines are not: check those with `stpn`).

    Args:
      args: The command line after `stpn`.
      expect: The exit code asserted (with both streams in the message).
      cwd: Working directory during the call (restored after it); None: the current one.
    """
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["stpn", *args])
    finally:
        os.chdir(previous)
    proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    assert code == expect, f"stpn {' '.join(args)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The command printed exactly one error line, naming every needle, and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def one_error_line_among_logs(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2 and one error line (`stpn <command>: error: ...`) besides the command's progress log lines,
    naming every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr, proc.stdout[-2000:])
    lines = [line for line in proc.stderr.splitlines() if re.match(r"^stpn [\w-]+: error: ", line)]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]

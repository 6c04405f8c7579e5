"""Apache Beam pipelines (optional `beam` extra): extraction + TFRecord building, batch localization."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stpn_tf.core.errors import StpnError, WriteError

# How a worker's StpnError reaches the driver: inside the runner's exception text, as the traceback's line.
_WORKER_ERROR = re.compile(r"stpn_tf\.core\.errors\.(?P<kind>StpnError|WriteError): (?P<message>[^\n]+)")


def split_pipeline_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Parses this script's flags; unknown flags and everything after a bare `--` go to Beam."""
    argv = list(argv)
    tail: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1:]
    known, unknown = parser.parse_known_args(argv)
    return vars(known), unknown + tail


def run_main(parse_args: Callable, run: Callable[..., int], argv: Sequence[str] | None) -> int:
    """Command-line entry point shared by the pipelines: exit code, one-line message on input errors."""
    try:
        kwargs, pipeline_args = parse_args(sys.argv[1:] if argv is None else argv)
        return run(**kwargs, pipeline_args=pipeline_args)
    except StpnError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2


def run_pipeline(pipeline) -> Any:
    """Runs `pipeline` to the end; a worker's StpnError comes back as one (one-line message, no traceback).

    Runners wrap an exception raised in a worker into their own (with the worker's traceback as text);
    the last StpnError / WriteError line found in that text is raised again as such.
    """
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except StpnError:
        raise
    except Exception as error:
        found = list(_WORKER_ERROR.finditer(str(error)))
        if not found:
            raise
        kind = WriteError if found[-1].group("kind") == "WriteError" else StpnError
        raise kind(found[-1].group("message").strip()) from error
    return result

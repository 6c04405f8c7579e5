"""The `stpn` command line: `stpn <command> [--config=NAME|FILE] [--config.a.b=v ...] [flags]`.

One module per command (stpn_tf.cli.<command>); this one dispatches, prints help and turns errors into
one line. The cli package is the only code that reads configs (stpn_tf.cli.settings builds the typed
settings the library takes).
"""

from __future__ import annotations

import difflib
import logging as std_logging
import os
import sys
from collections.abc import Sequence

from stpn_tf import __version__
from stpn_tf.cli import build_dataset, classify, demo, evaluate, export, extract, i3d, localize, report, study, train, tune
from stpn_tf.cli.common import PROG, Command, command_help, import_tensorflow, parse
from stpn_tf.core.errors import StpnError, WriteError

COMMANDS: dict[str, Command] = {m.COMMAND.name: m.COMMAND for m in (
    demo, build_dataset, train, localize, tune, study, report, evaluate, export, extract, classify, i3d)}
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "help")


def overview() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = [f"{PROG} {__version__}: the Sparse Temporal Pooling Network (STPN, CVPR 2018) for weakly supervised "
             "temporal action localization.", "",
             f"usage: {PROG} <command> [flags]      {PROG} <command> --help lists that command's flags", "",
             "commands:"]
    lines += [f"  {name:<{width}} {command.purpose}" for name, command in COMMANDS.items()]
    lines += ["",
              "Configs: --config=thumos14 | demo | activitynet13 | FILE; override any value with --config.SECTION.KEY=V.",
              "Shipped THUMOS14 annotations, usable in any file flag: stpn:thumos14/th14_evalkit_groundtruth,",
              "stpn:thumos14/thumos14reduced, stpn:thumos14/basnet/gt.json.",
              "Start with: stpn demo --workdir=work/demo"]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Runs `stpn argv[1:]`; returns the exit code (0 ok, 2 bad input or usage, 130 interrupted)."""
    args = list(argv[1:])
    if not args or args[0] in HELP_FLAGS:
        print(overview())
        return 0 if args else 2
    if args[0] == "--helpfull":
        print("\n\n".join([overview()] + [command_help(c) for c in COMMANDS.values()]))
        return 0
    if args[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        kind = "flag" if name.startswith("-") else "command"
        print(f"{PROG}: unknown {kind} '{name}'{hint}; commands: {', '.join(COMMANDS)} ({PROG} --help)",
              file=sys.stderr)
        return 2
    if any(a in HELP_FLAGS[:4] or a == "--helpfull" for a in rest):
        print(command_help(command))
        return 0
    prefix = f"{PROG} {name}"
    try:
        parsed = parse(command, rest)
        if command.check is not None:  # arguments and files first: a typo is answered before TF's start-up
            command.check(parsed)
        _setup_logging(parsed.flags["verbose"].value)
        if command.needs_tensorflow(parsed):
            import_tensorflow(parsed.flags["verbose"].value)
        return command.run(parsed)
    except StpnError as error:
        _STATE["write_failed"] = isinstance(error, WriteError)
        print(f"{prefix}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except OSError as error:  # a write outside the atomic helpers (a log file, say) on a full disk
        from stpn_tf.core.atomic import write_error

        failed = write_error(getattr(error, "filename", None) or "an output file", error)
        if failed is None:
            raise
        _STATE["write_failed"] = True
        print(f"{prefix}: error: {' '.join(str(failed).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (rerun the same command to resume from the last finished epoch)" if name in ("train", "demo") else ""
        print(f"{prefix}: interrupted{hint}", file=sys.stderr)
        return 130


def _setup_logging(verbose: bool = False) -> None:
    """absl logging at INFO; unless `verbose`, only the project's own lines, without absl's prefix.

    TensorFlow and Keras log through the same handler (retracing warnings, SavedModel internals such as
    "Sharding callback duration"); those are for --verbose. Errors of any origin are always shown.
    """
    from absl import flags, logging

    if not flags.FLAGS.is_parsed():
        flags.FLAGS([PROG], known_only=True)  # absl logging wants parsed flags; the commands have their own
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    for old in [f for f in handler.filters if isinstance(f, _OwnLines)]:  # main() runs again in tests
        handler.removeFilter(old)
    if verbose:
        handler.setFormatter(logging.PythonFormatter())
    else:
        handler.addFilter(_OwnLines())
        handler.setFormatter(_OwnLines())


class _OwnLines(std_logging.Formatter, std_logging.Filter):
    """Filter and formatter of the default output: records logged from stpn_tf's own files (and errors from
    anywhere), as plain lines; warnings say so."""

    _PACKAGE = os.path.dirname(os.path.abspath(__file__)).rsplit(os.sep, 1)[0] + os.sep

    def __init__(self):
        std_logging.Formatter.__init__(self, "%(message)s")
        std_logging.Filter.__init__(self)

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.ERROR or str(record.pathname).startswith(self._PACKAGE)

    def format(self, record: std_logging.LogRecord) -> str:
        line = std_logging.Formatter.format(self, record)
        return line if record.levelno < std_logging.WARNING else f"{record.levelname.lower()}: {line}"


_STATE = {"write_failed": False}


def run() -> None:
    """Console-script entry point."""
    try:
        code = main(sys.argv)
        sys.stdout.flush()
    except BrokenPipeError:  # `stpn ... | head` closed the pipe: not an error of the command
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout again at exit
        sys.exit(0)
    if _STATE["write_failed"]:
        # After a failed write, native libraries may hold files they can no longer flush; HDF5 crashes on
        # them in its exit handler. Every output is atomic and the error is printed: end the process here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()

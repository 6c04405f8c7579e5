"""What every `stpn` command shares: its description, its own flags, config resolution, help, quiet TF.

Each command module defines a `COMMAND = Command(...)`: a name, a purpose, a usage line, the config
sections it reads, a function defining its flags on a fresh `absl.flags.FlagValues` (so `--help` lists
only its own flags and a flag of another command is an unknown flag), and the function that runs it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from stpn_tf import configs
from stpn_tf.core import resources
from stpn_tf.core.errors import StpnError

PROG = "stpn"


@dataclasses.dataclass(frozen=True)
class Command:
    """One `stpn` command.

    Attributes:
      name: As typed after `stpn`.
      purpose: One line for `stpn --help` and the first line of `stpn <name> --help`.
      usage: The usage line(s).
      define: Defines the command's flags on the FlagValues it is given.
      run: Called with the `Parsed` command line; returns the exit code.
      config_sections: Config sections the command reads (shown in its help); () = no --config.
      default_config: Config used without --config (a work directory's recorded config comes first).
      details: More help text after the flags.
      check: Called with the `Parsed` command line before TensorFlow is imported: argument and file checks
        that fail fast (one-line StpnErrors) instead of after TensorFlow's start-up.
      tensorflow: Whether the command needs TensorFlow (imported quietly before `run`); evaluation does not.
        A callable decides from the `Parsed` command line (`stpn localize --raw` with the numpy engine does not).
    """

    name: str
    purpose: str
    usage: str
    define: Callable[[flags.FlagValues], None]
    run: Callable[["Parsed"], int]
    config_sections: tuple[str, ...] = ()
    default_config: str = "thumos14"
    details: str = ""
    check: Callable[["Parsed"], None] | None = None
    tensorflow: bool | Callable[["Parsed"], bool] = True

    def needs_tensorflow(self, parsed: "Parsed") -> bool:
        return bool(self.tensorflow(parsed) if callable(self.tensorflow) else self.tensorflow)

    @property
    def uses_config(self) -> bool:
        return bool(self.config_sections)


# ---- flags shared by several commands (each command defines its own copy on its own FlagValues) ------

def define_workdir(fv: flags.FlagValues, help_text: str, required: bool = True) -> None:
    flags.DEFINE_string("workdir", None, help_text + (" (required)" if required else ""), flag_values=fv)


def define_verbose(fv: flags.FlagValues) -> None:
    flags.DEFINE_bool("verbose", False, "also show TensorFlow's start-up and internal log lines (absl format)",
                      flag_values=fv)


def require(fv: flags.FlagValues, *names: str) -> None:
    missing = [f"--{name}" for name in names if not fv[name].value]
    if missing:
        raise StpnError(f"missing required flag(s): {', '.join(missing)}")


def check_dataset_dir(dataset_dir: str) -> None:
    """A local `config.dataset.dir` that is not a built dataset: one line with the two ways out.

    Checked with plain os calls before TensorFlow loads; remote paths (gs://...) are left to the library.
    """
    fix = ("pass --config.dataset.dir=DIR (a directory written by `stpn build-dataset`), or build it with "
           "`stpn build-dataset`")
    if not dataset_dir:
        raise StpnError(f"config.dataset.dir is empty: {fix}")
    if "://" in dataset_dir:
        return
    from stpn_tf.artifacts.dataset_dir import metadata_path

    if not os.path.isdir(dataset_dir):
        raise StpnError(f"{dataset_dir}: dataset directory not found; {fix}")
    if not os.path.isfile(metadata_path(dataset_dir)):
        raise StpnError(f"{metadata_path(dataset_dir)}: dataset metadata not found (not a built dataset, or its build "
                        f"did not finish); {fix}")


# ---- config --------------------------------------------------------------------------------------------

_CONFIG_VALUE = re.compile(r"^--?config(=(?P<value>.*))?$")
_CONFIG_OVERRIDE = re.compile(r"^--?(no)?config\.(?P<key>[^=]+)(=.*)?$")


def split_config_flag(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the --config value or None, argv without it); `--config X` and `--config=X` both work."""
    rest, value, i = [], None, 0
    argv = list(argv)
    while i < len(argv):
        m = _CONFIG_VALUE.match(argv[i])
        if m:
            if m.group("value") is not None:
                value = m.group("value")
            elif i + 1 < len(argv):
                value, i = argv[i + 1], i + 1
            else:
                raise StpnError("--config needs a value: a config name (thumos14, demo, activitynet13) or file")
            i += 1
            continue
        rest.append(argv[i])
        i += 1
    return value, rest


def check_overrides(config: ml_collections.ConfigDict, argv: Sequence[str]) -> None:
    """A `--config.a.b=v` naming no key of the config is a one-line error with the nearest keys; so is a key
    given twice (ml_collections would join two tuples, `(a,)` then `(b,)` giving `(a, b)`, and keep the last
    of two other values: neither is what a second flag usually means)."""
    known = configs.flat_keys(config)
    sections = {k.split(".")[0] for k in known}
    seen = set()
    for arg in argv:
        m = _CONFIG_OVERRIDE.match(arg)
        if not m:
            continue
        key = m.group("key")
        if key in seen:
            raise StpnError(f"--config.{key} is given twice; give each config key once")
        seen.add(key)
        if key in known:
            continue
        if key in sections:
            raise StpnError(f"--config.{key} is a section; set one of its keys, e.g. --config."
                            f"{next(k for k in known if k.startswith(key + '.'))}=...")
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        hint = f" (did you mean --config.{close[0]}?)" if close else ""
        raise StpnError(f"unknown config key --config.{key}{hint}")


def recorded_config(argv: Sequence[str]) -> ml_collections.ConfigDict | None:
    """The config recorded by the work directory `--workdir` names, if it has one.

    An export directory points at the work directory it came from, whose record then counts.
    """
    from stpn_tf.artifacts.export_dir import is_export_dir, read_export_info
    from stpn_tf.artifacts.workdir import WorkDir

    workdir = None
    for i, arg in enumerate(argv):
        if arg.startswith("--workdir="):
            workdir = arg.split("=", 1)[1]
        elif arg == "--workdir" and i + 1 < len(argv):
            workdir = argv[i + 1]
    if not workdir or not os.path.isdir(workdir):
        return None
    if is_export_dir(workdir):
        try:
            workdir = read_export_info(workdir).source
        except StpnError:
            return None
        if not workdir or not os.path.isdir(workdir):
            return None
    record = WorkDir(workdir).read_record() if WorkDir(workdir).is_workdir() else None
    if record is None or not record.config:
        return None
    return configs.restore_config(record.config, record.config_name)


# Parsed.config_name when the config is the one `--workdir` recorded (no --config given).
RECORDED_CONFIG = "the work directory's recorded config"


def batch_size(p: "Parsed", key: str) -> int:
    """Videos per call, config value `key` ("localize.batch_size", "tune.batch_size"), except a work
    directory's recorded value (it batched the runs of its time: 16 and 256 before batches came from the
    data), which gives way to 0, the data's own batches, unless --config.<key> is given. Only speed and
    memory depend on it, never the output."""
    if p.config_name == RECORDED_CONFIG and key not in p.overrides:
        return 0
    section, name = key.split(".")
    return int(getattr(getattr(p.config, section), name))


@dataclasses.dataclass
class Parsed:
    """A parsed command line: the command's flags, positional arguments, the config and where it came from.

    `overrides` are the config keys set on the command line (`--config.localize.alpha=0.7` -> "localize.alpha").
    """

    flags: flags.FlagValues
    args: list[str]
    config: ml_collections.ConfigDict | None
    config_name: str
    overrides: tuple[str, ...] = ()

    def __getattr__(self, name):  # parsed.workdir is parsed.flags["workdir"].value
        if name.startswith("__") or name == "flags":
            raise AttributeError(name)
        try:
            return self.flags[name].value
        except KeyError:
            raise AttributeError(name) from None

    def path(self, name: str) -> str | None:
        """A path flag with `stpn:<shipped path>` resolved (stpn_tf.core.resources)."""
        return resources.resolve(self.flags[name].value)


def parse(command: Command, argv: Sequence[str]) -> Parsed:
    """Parses `stpn <command> argv` on a FlagValues of the command's own flags (one-line StpnErrors)."""
    fv = flags.FlagValues()
    command.define(fv)
    define_verbose(fv)
    argv = list(argv)
    config, config_name = None, ""
    if command.uses_config:
        value, argv = split_config_flag(argv)
        if value is not None:
            config, config_name = configs.load_config(value), value
        else:
            config = recorded_config(argv)
            if config is not None:
                config_name = RECORDED_CONFIG
            else:
                config, config_name = configs.load_config(command.default_config), command.default_config
        check_overrides(config, argv)
        config_flags.DEFINE_config_dict("config", config, "the config", flag_values=fv, lock_config=True,
                                        sys_argv=[PROG] + argv)
    else:
        for arg in argv:
            if _CONFIG_VALUE.match(arg) or _CONFIG_OVERRIDE.match(arg):
                raise StpnError(f"{PROG} {command.name} takes no --config (it reads no config values)")
    try:
        args = fv([PROG] + argv)[1:]
    except flags.Error as error:
        raise StpnError(" ".join(str(error).replace("\\n", " ").split())) from None
    overrides = tuple(dict.fromkeys(m.group("key") for m in map(_CONFIG_OVERRIDE.match, argv) if m))
    return Parsed(flags=fv, args=args, config=fv["config"].value if command.uses_config else None,
                  config_name=config_name, overrides=overrides)


# ---- help ----------------------------------------------------------------------------------------------

CONFIG_HELP = ("  --config=NAME|FILE   config: thumos14, demo, activitynet13 or a config file (default: the work "
               "directory's recorded config, if any, else the command's default); override any value with "
               "--config.SECTION.KEY=VALUE")
_METAVARS = {"int": "N", "float": "X", "comma separated list of strings": "A,B"}


_HEAD_WIDTH = 20  # the flag column; help text starts at column 23


def _flag_line(flag) -> list[str]:
    """A flag's help: `--name=METAVAR  text`, the text on a line of its own when the name fills the column."""
    text = re.sub(r"^<[^>]*>: ", "", flag.help)  # absl prefixes enum help with its values
    if flag.flag_type() == "bool":
        head = f"--{flag.name}"
    elif hasattr(flag.parser, "enum_values"):
        values = "|".join(flag.parser.enum_values)
        head = f"--{flag.name}={values}" if len(values) <= 16 else f"--{flag.name}=NAME"
        if len(values) > 16:
            text += f"; one of: {', '.join(flag.parser.enum_values)}"
    else:
        head = f"--{flag.name}={_METAVARS.get(flag.flag_type(), 'VALUE')}"
    default = flag.default
    if isinstance(default, list):
        default = ",".join(default)
    shown = "" if default in (None, "", False) else f" (default: {default})"
    if len(head) > _HEAD_WIDTH - 2:  # too long for the column: the text starts on the next line
        return [f"  {head}", f"{' ' * (_HEAD_WIDTH + 3)}{text}{shown}"]
    return [f"  {head:<{_HEAD_WIDTH}} {text}{shown}"]


def command_help(command: Command) -> str:
    """`stpn <command> --help`: purpose, usage, only the command's own flags, the config values it reads."""
    fv = flags.FlagValues()
    command.define(fv)
    define_verbose(fv)
    lines = [f"{PROG} {command.name}: {command.purpose}", "", *("usage: " + command.usage).splitlines(), "",
             "flags:"]
    if command.uses_config:
        lines.append(CONFIG_HELP)
    lines += [line for name in fv for line in _flag_line(fv[name])]
    lines.append("  -h, --help           this help")
    if command.uses_config:
        base = configs.load_config(command.default_config)
        lines += ["", f"config values it reads (defaults of --config={command.default_config}):"]
        for section in command.config_sections:
            values = configs.flat_keys(base[section], f"{section}.")
            lines.append("  " + "  ".join(f"{k}={_short(v)}" for k, v in values.items()))
    if command.details:
        lines += [""] + command.details.strip().splitlines()
    return "\n".join(_wrap(line) for line in lines)


def _short(value: Any) -> str:
    if isinstance(value, tuple) and len(value) > 4 and all(isinstance(v, float) for v in value):
        return f"({value[0]:g}..{value[-1]:g}, {len(value)} values)"
    return repr(value) if isinstance(value, str) else str(value)


def _wrap(line: str, width: int = 110) -> str:
    if len(line) <= width:
        return line
    flag = line.startswith("  --") or line.startswith(" " * (_HEAD_WIDTH + 3))
    indent = " " * (_HEAD_WIDTH + 3 if flag else len(line) - len(line.lstrip()) + 2)
    return textwrap.fill(line, width=width, subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False)


# ---- quiet TensorFlow ----------------------------------------------------------------------------------

_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
                       r"STDERR|[IWEF]\d{4} [\d:.]+\s+\d+\s+\S+:\d+\]|To enable the following "
                       r"instructions:)")


def import_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow; unless `verbose`, without the start-up lines its C++ side prints.

    TF_CPP_MIN_LOG_LEVEL=3 hides most of them; a few are printed during import before TF reads it, so
    the import runs with file descriptor 2 captured and everything but those lines is passed on.
    """
    if verbose or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _TF_NOISE.match(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)

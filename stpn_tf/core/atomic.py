"""Atomic output: every file or directory the project writes appears complete or not at all.

Outputs are written under a hidden temporary name in the destination's own directory (so the final
rename stays on one file system and is atomic) and renamed into place only when writing succeeded. On an
error the temporary is removed; a killed process leaves only hidden `.tmp-*` names, which no reader
picks up. Local paths use `os`; other file systems (gs://, ...) go through `tf.io.gfile`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

from stpn_tf.core.errors import StpnError, WriteError

TEMP_MARK = ".tmp-"
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_FULL_MESSAGES = ("No space left on device", "File too large", "Disk quota exceeded", "file size limit")
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile on a full disk


def write_error(path: str, error: BaseException, kept: str = "the previous version, if any, is unchanged"):
    """A WriteError naming `path` for an error that means the output could not be written, else None.

    A full disk, a file-size limit or a quota (any error type whose errno or message says so, e.g. TF's
    "File too large") gets the hint; another OSError (no permission, say) is reported as it is.
    """
    if isinstance(error, WriteError):
        return error
    text = str(error)
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        reason = os.strerror(error.errno)
    elif _SHORT_WRITE.search(text):
        reason = "a short write"
    else:
        reason = next((m for m in _FULL_MESSAGES if m.lower() in text.lower()), None)
    if reason is not None:
        return WriteError(f"{path}: cannot write it ({reason}: the disk is full or a file-size limit is set); "
                          f"{kept}")
    if isinstance(error, OSError) and error.errno is not None:
        return WriteError(f"{path}: cannot write it ({os.strerror(error.errno)}); {kept}")
    return None


def _is_local(path: str) -> bool:
    return "://" not in path


def temporary_name(path: str) -> str:
    """A hidden sibling of `path` that keeps its suffix (Keras, numpy and matplotlib look at it)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{_suffix(name)}")


def _suffix(name: str) -> str:
    # ".weights.h5" and ".tfrecord" style suffixes: keep everything after the first dot of the name.
    stripped = name.lstrip(".")
    return stripped[stripped.index("."):] if "." in stripped else ""


def is_temporary(name: str) -> bool:
    """True for the hidden names `temporary_name` makes (and older `.tmp-` prefixed ones)."""
    return name.startswith(".") and TEMP_MARK in name


def _check_directory(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path)) if _is_local(path) else os.path.dirname(path)
    if _is_local(path) and not os.path.isdir(directory):
        raise StpnError(f"{path}: output directory {directory} does not exist")
    return directory


def _file_mode() -> int:
    # Temporary files may be created 0600; give the result the mode a plain open() would (0666 less umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def replace(temporary: str, path: str) -> None:
    """Renames a finished temporary onto `path` (replacing what is there)."""
    if _is_local(path):
        os.replace(temporary, path)
    else:
        import tensorflow as tf

        tf.io.gfile.rename(temporary, path, overwrite=True)


def remove_quietly(path: str) -> None:
    """Deletes a file or directory if it exists; never raises."""
    with contextlib.suppress(Exception):
        if _is_local(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        else:
            import tensorflow as tf

            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)


@contextlib.contextmanager
def atomic_output(path: str, *, make_parents: bool = False) -> Iterator[str]:
    """Yields a temporary file name to write; renames it onto `path` when the block succeeds.

    Args:
      path: Final file.
      make_parents: Create the destination directory first; otherwise it must exist.
    """
    if make_parents and _is_local(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _check_directory(path)
    temporary = temporary_name(path)
    try:
        yield temporary
        if _is_local(path):
            os.chmod(temporary, _file_mode())
        replace(temporary, path)
    except BaseException as error:
        _abandon(temporary, path, error)
        raise


def _abandon(temporary: str, path: str, error: BaseException) -> None:
    """Removes a failed write's temporary; raises the one-line WriteError when `error` is a failed write
    (full disk, no permission), and returns for any other error, which the caller re-raises."""
    remove_quietly(temporary)
    failed = write_error(path, error)
    if failed is not None and failed is not error:
        raise failed from None


def atomic_write_bytes(path: str, data: bytes, *, make_parents: bool = False) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_output(path, make_parents=make_parents) as temporary:
        if _is_local(path):
            with open(temporary, "wb") as handle:
                handle.write(data)
        else:
            import tensorflow as tf

            with tf.io.gfile.GFile(temporary, "wb") as handle:
                handle.write(data)


def atomic_write_text(path: str, text: str, *, make_parents: bool = False) -> None:
    """Writes UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), make_parents=make_parents)


def atomic_write_json(path: str, value: Any, *, indent: int | None = 1, make_parents: bool = False) -> None:
    """Writes `value` as JSON (with a final newline) to `path` atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent) + "\n", make_parents=make_parents)


@contextlib.contextmanager
def atomic_directory(path: str, *, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary directory to fill; it replaces `path` when the block succeeds.

    An existing `path` is kept until the new directory is complete; with `overwrite=False` an existing
    `path` is an error before anything is written.
    """
    if os.path.exists(path) and not overwrite:
        raise StpnError(f"{path}: already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = temporary_name(os.path.abspath(path))
    try:
        os.makedirs(temporary)
        yield temporary
        if os.path.exists(path):
            # Two renames: the old directory leaves under a hidden name, the new one takes its place.
            old = temporary_name(os.path.abspath(path))
            os.replace(path, old)
            os.replace(temporary, path)
            remove_quietly(old)
        else:
            os.replace(temporary, path)
    except BaseException as error:
        _abandon(temporary, path, error)
        raise


def remove_temporaries(directory: str, predicate=lambda name: True) -> int:
    """Deletes hidden temporaries left in `directory` by killed writers; returns how many."""
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for name in os.listdir(directory):
        if is_temporary(name) and predicate(name):
            remove_quietly(os.path.join(directory, name))
            removed += 1
    return removed

"""How the tests compile XLA: the LLVM backend at -O0 (set in tests/conftest.py before TensorFlow loads).

The suite compiles over a hundred small XLA programs; at -O0 it used 680 instead of 846 CPU-seconds (user)
on the 2-core machine, the saving spread over every file that localizes. The level changes how fast the
compiled code runs, not what it computes: without fast-math (XLA's CPU default) LLVM may not reorder
floating-point arithmetic at any level. tests/test_export.py checks it: it reloads an export in a process at
the default level and compares every output byte for byte. `make demo` and bench/ run the default.
"""

from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0"


def with_fast_compile(flags: str) -> str:
    """`flags` (an XLA_FLAGS value) with FAST_COMPILE added."""
    return f"{flags} {FAST_COMPILE}".strip()


def default_level_env() -> dict[str, str]:
    """os.environ for a process that compiles XLA at the default level (the tests' flag removed)."""
    flags = " ".join(flag for flag in os.environ.get("XLA_FLAGS", "").split() if flag != FAST_COMPILE)
    env = dict(os.environ, XLA_FLAGS=flags)
    if not flags:
        del env["XLA_FLAGS"]
    return env

"""How the tests compile XLA: quickly (set in tests/conftest.py before TensorFlow loads).

The suite compiles over a hundred small XLA programs, so their compile time is a good part of its run. The
flags in FAST_COMPILE choose how the CPU backend turns an optimized program into machine code, not what the
program computes:
- the LLVM backend at -O0: without fast-math (XLA's CPU default) LLVM may not reorder floating-point
  arithmetic at any level;
- the element-wise IR emitter instead of the fusion emitters, and the program in one LLVM module instead of
  several compiled in parallel (for 2 cores and small programs the split costs more than it saves);
- the whole program as one compiled function instead of the thunk runtime's sequence of kernels.
On the 2-core machine the whole suite (`pytest -n 2`) used 846 CPU-seconds (user) with the default flags,
680 at -O0 alone and 569 with all four; `tests/test_localize.py` alone 78 at -O0 alone and 51 with all four.
tests/test_export.py checks that they change no result: it reloads an export in a process with the
default flags and compares every output byte for byte. `make demo` and bench/ run the defaults.
"""

from __future__ import annotations

import os

FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                "--xla_cpu_parallel_codegen_split_count=1", "--xla_cpu_use_thunk_runtime=false")


def with_fast_compile(flags: str) -> str:
    """`flags` (an XLA_FLAGS value) with FAST_COMPILE added."""
    return " ".join([*flags.split(), *FAST_COMPILE])


def default_xla_env() -> dict[str, str]:
    """os.environ for a process that compiles XLA with the default flags (the tests' FAST_COMPILE removed)."""
    flags = " ".join(flag for flag in os.environ.get("XLA_FLAGS", "").split() if flag not in FAST_COMPILE)
    env = dict(os.environ, XLA_FLAGS=flags)
    if not flags:
        del env["XLA_FLAGS"]
    return env

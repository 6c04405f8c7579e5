"""Where the serving graph's NaN / infinity sums run, and what each placement costs (issue 20).

`bench/localize.py` measures the export's checks as shipped (RESULT serving_check_overhead). This bench
asks whether another placement of the same sums would cost less, on the same shape (batch 16 x 1024
snippets x D = 1024, random-weight STPN models, the shipped bounds): in one process, each variant of the
serving graph against the unchecked graph, interleaved over `--rounds` rounds, the median of the paired
ratios; and the process's CPU time over wall time per variant (2.0 = both cores busy).

Variants (every one keeps the size and timing checks, which gate the models):
- shipped: the sums start with the models (what `serving_default` runs).
- after_models: the sums start once the stream models are done, beside the localization.
- before: the models wait for the sums.
- xla_after_models: after the models, as one XLA-compiled reduction (single-threaded on the CPU).
- sizes_only: no sums at all (what the size and timing checks alone cost).

Run: .venv/bin/python bench/serving_check_placement.py [--rounds=80]
Prints one line per variant and ends with `RESULT best_placement_overhead=<x>` (the lowest paired median
of the variants that read every feature).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from localize import serving_setup  # noqa: E402  (bench/localize.py: the same module and inputs)
from stpn_tf.inference.module import check_serving_inputs, guarded  # noqa: E402

DIM = 1024
READING = ("shipped", "after_models", "before", "xla_after_models")


def variants(module) -> dict:
    xla_sums = tf.function(lambda a, b: tf.stack([tf.reduce_sum(a), tf.reduce_sum(b)]), jit_compile=True,
                           autograph=False)

    def localized(outputs, lengths, num_snippets, sps):
        detections = module.localizer(outputs["rgb"], outputs["flow"], lengths=lengths, num_snippets=num_snippets,
                                      seconds_per_snippet=sps)
        return {**detections, **module.stacked(outputs, lengths, num_snippets)}

    def variant(kind):
        def serve(rgb, flow, num_snippets, seconds_per_snippet):
            rgb, flow, n, sps, check_values = check_serving_inputs(rgb, flow, num_snippets, seconds_per_snippet,
                                                                   feature_dim=DIM)
            if kind == "shipped":
                return guarded(module.run(rgb, flow, n, sps), check_values())
            if kind == "sizes_only":
                return module.run(rgb, flow, n, sps)
            if kind == "before":
                check = check_values()
                with tf.control_dependencies([check]):
                    rgb, flow = tf.identity(rgb), tf.identity(flow)
                return guarded(module.run(rgb, flow, n, sps), check)
            outputs, lengths, n = module.run_streams(rgb, flow, n)
            after = [outputs["rgb"]["tcam"], outputs["flow"]["tcam"]]
            if kind == "after_models":
                check = check_values(after)
            else:  # xla_after_models
                with tf.control_dependencies(after):
                    sums = xla_sums(rgb, flow)
                check = tf.debugging.assert_equal(tf.reduce_all(tf.math.is_finite(sums)), True)
            return guarded(localized(outputs, lengths, n, sps), check)

        return tf.function(serve, autograph=False)

    out = {"unchecked": tf.function(lambda rgb, flow, num_snippets, seconds_per_snippet: module.run(
        rgb, flow, num_snippets, seconds_per_snippet), autograph=False)}
    out.update({kind: variant(kind) for kind in (*READING, "sizes_only")})
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=80)
    args = parser.parse_args()
    module, inputs = serving_setup(dim=DIM)
    functions = variants(module)
    times = {name: [] for name in functions}
    cpu = {name: 0.0 for name in functions}
    for fn in functions.values():
        fn(**inputs)["num_detections"].numpy()
    for _ in range(args.rounds):  # interleaved, so that a burst of other load hits every variant alike
        for name, fn in functions.items():
            c, start = cpu_seconds(), time.perf_counter()
            fn(**inputs)["num_detections"].numpy()
            times[name].append(time.perf_counter() - start)
            cpu[name] += cpu_seconds() - c
    base = np.asarray(times["unchecked"])
    overheads = {}
    for name, t in times.items():
        t = np.asarray(t)
        overheads[name] = float(np.median(t / base)) - 1.0
        print(f"{name:17s} min {1000 * t.min():6.1f} ms  median {1000 * np.median(t):6.1f} ms  paired-median "
              f"overhead {100 * overheads[name]:5.1f} %  CPU/wall {cpu[name] / t.sum():.2f}", flush=True)
    print(f"RESULT best_placement_overhead={min(overheads[k] for k in READING):.3f}")


if __name__ == "__main__":
    main()

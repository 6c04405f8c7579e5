"""Train-step throughput of the THUMOS14-size STPN against the machine's practical matmul roofline.

  .venv/bin/python bench/train_throughput.py [--steps=50] [--rounds=5] [--warmup=5]

Model and batch as in the thumos14 config: D = 1024 features, T = 400 snippets, batch B = 6, C = 20 classes,
attention_units H = 256, Adam. The model trains with its own `train_step` through `model.fit`, compiled with
`jit_compile=True`, on one constant random batch repeated by tf.data (no input pipeline cost). In the same
run, a plain `tf.matmul` of the dominant shape [B*T, D] x [D, H], also compiled by XLA, gives the practical
roofline. The machine is shared, so timings interleave: each round runs steps/rounds train steps and the same
number of matmuls back to back, and the ratio is the median of the per-round ratios.

FLOPs per train step are counted analytically (formula printed) and the matrix-multiply part is
cross-checked against the dots in XLA's optimized HLO of the same train step.

Prints the figures and ends with `RESULT train_step_vs_matmul_roofline=<ratio>`.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from stpn_tf.model.stpn import STPN  # noqa: E402

flags.DEFINE_integer("steps", 50, "Timed train steps (after warm-up), split over --rounds.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds of train steps and roofline matmuls.")
flags.DEFINE_integer("warmup", 5, "Untimed train steps (compilation) before timing.")
flags.DEFINE_integer("schedule_steps", 24000, "Steps of the full schedule to project.")
flags.DEFINE_bool("breakdown", True, "Also time forward, forward+backward and the backward matmul shape.")
FLAGS = flags.FLAGS

B, T, D, C, H = 6, 400, 1024, 20, 256


def num_params(d: int = D, h: int = H, c: int = C) -> int:
    """Attention D->H->1 (kernels and biases) and classifier D->C with bias."""
    return d * h + h + h + 1 + d * c + c


def analytic_flops(b: int = B, t: int = T, d: int = D, h: int = H, c: int = C) -> dict[str, int]:
    """FLOPs of one training step, by part (a multiply-add is 2 FLOPs, other element ops 1).

    Input features need no gradient, so the backward pass of each dense layer is only its weight gradient:
    forward X.W1 and backward X^T.dH are the two [N, D] x [D, H] products (N = B*T) that dominate. The T-CAM
    is not part of the loss and XLA prunes it from the train step.
    """
    n = b * t
    p = num_params(d, h, c)
    return {
        "attention matmuls (fwd X.W1 + bwd X^T.dH): 4*N*D*H": 4 * n * d * h,
        "attention rest (bias, ReLU, score D=H->1 fwd/bwd, sigmoid): 8*N*H + 8*N": 8 * n * h + 8 * n,
        "pooling (weighted sum fwd, d(weights) bwd): 4*N*D + B*D": 4 * n * d + b * d,
        "classifier (fwd, dW, d(pooled)): 6*B*D*C + 8*B*C": 6 * b * d * c + 8 * b * c,
        "Adam update: 12*P": 12 * p,
    }


def hlo_dot_flops(hlo_text: str) -> tuple[int, list[str]]:
    """Sums 2 * prod(output) * prod(contracting dims) over every `dot` in an HLO module's text."""
    shapes = {}
    for m in re.finditer(r"(%[\w.\-]+) = \w+\[([\d,]*)\]", hlo_text):
        shapes[m.group(1)] = [int(v) for v in m.group(2).split(",") if v]
    total, dots = 0, []
    pattern = r"(%[\w.\-]+) = \w+\[([\d,]*)\]\S* dot\((%[\w.\-]+), (%[\w.\-]+)\), lhs_contracting_dims=\{([\d,]*)\}"
    for m in re.finditer(pattern, hlo_text):
        out = [int(v) for v in m.group(2).split(",") if v]
        lhs = shapes[m.group(3)]
        contract = [lhs[int(i)] for i in m.group(5).split(",") if i]
        flops = 2 * int(np.prod(out, dtype=np.int64)) * int(np.prod(contract, dtype=np.int64))
        total += flops
        dots.append(f"{shapes[m.group(3)]} x {shapes[m.group(4)]} -> {out}: {flops / 1e6:.1f} MFLOP")
    return total, dots


class _StepTimer(keras.callbacks.Callback):
    """Wall time from the first batch's start to the last batch's end (excludes fit() set-up)."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.end = time.perf_counter()


def _time_calls(fn, args, n: int) -> float:
    """Seconds per call of a compiled function, result fetched at the end."""
    out = fn(*args)
    out.numpy()
    start = time.perf_counter()
    for _ in range(n):
        out = fn(*args)
    out.numpy()
    return (time.perf_counter() - start) / n


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    features = tf.constant(rng.standard_normal((B, T, D)).astype(np.float32))
    inputs = {"features": features, "mask": tf.ones((B, T), tf.float32)}
    labels = tf.constant((rng.random((B, C)) < 0.1).astype(np.float32))
    dataset = tf.data.Dataset.from_tensors((inputs, labels)).repeat()

    keras.utils.set_random_seed(0)
    model = STPN(C, attention_units=H)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=True)
    model(inputs)
    if not model.jit_compile:
        raise SystemExit("Keras refused jit_compile=True (is TF op determinism enabled?)")
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=FLAGS.warmup, epochs=1, verbose=0, shuffle=False)
    compile_seconds = time.perf_counter() - start

    a = tf.reshape(features, [B * T, D])
    w = model.attention_module.hidden.kernel.value
    matmul = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=True)
    matmul(a, w).numpy()

    per_round = max(1, FLAGS.steps // FLAGS.rounds)
    step_times, matmul_times = [], []
    for _ in range(FLAGS.rounds):
        timer = _StepTimer()
        model.fit(dataset, steps_per_epoch=per_round, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        step_times.append((timer.end - timer.start) / per_round)
        matmul_times.append(_time_calls(matmul, (a, w), per_round))

    parts = analytic_flops()
    step_flops = sum(parts.values())
    matmul_flops = 2 * B * T * D * H
    step_gflops = [step_flops / s / 1e9 for s in step_times]
    matmul_gflops = [matmul_flops / s / 1e9 for s in matmul_times]
    ratios = [x / y for x, y in zip(step_gflops, matmul_gflops)]
    step_s = statistics.median(step_times)

    # Cross-check: the dots XLA actually runs in this train step.
    traced = tf.function(lambda data: model.train_step(data), jit_compile=True)
    hlo_flops, dots = hlo_dot_flops(traced.experimental_get_compiler_ir((inputs, labels))(stage="optimized_hlo"))

    print(f"STPN train step, B={B} T={T} D={D} H={H} C={C}, Adam, jit_compile=True, model.fit on a constant batch")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs "
          "(shared machine: figures depend on the load of other processes)")
    print(f"compile + {FLAGS.warmup} warm-up steps: {compile_seconds:.1f} s; timed: {FLAGS.rounds} rounds x "
          f"{per_round} steps, each followed by {per_round} matmuls")
    print("FLOPs per train step (N = B*T, P = parameters = %d):" % num_params())
    for name, value in parts.items():
        print(f"  {value / 1e6:10.1f} MFLOP  {name}")
    print(f"  {step_flops / 1e9:10.3f} GFLOP  total")
    print(f"XLA optimized HLO dots: {hlo_flops / 1e9:.3f} GFLOP over {len(dots)} dots "
          f"(analytic matmul terms: {(4 * B * T * D * H + 6 * B * D * C + 4 * B * T * H) / 1e9:.3f} GFLOP)")
    for d in dots:
        print(f"    {d}")
    print(f"train step ms per round: {', '.join(f'{s * 1e3:.1f}' for s in step_times)}")
    print(f"matmul ms per round:     {', '.join(f'{s * 1e3:.2f}' for s in matmul_times)}")
    print(f"train step: {step_s * 1e3:.1f} ms/step (median), {B * T / step_s:,.0f} snippets/s, "
          f"{statistics.median(step_gflops):.1f} GFLOP/s")
    print(f"roofline tf.matmul [{B * T},{D}]x[{D},{H}] (XLA): {statistics.median(matmul_times) * 1e3:.2f} ms, "
          f"{statistics.median(matmul_gflops):.1f} GFLOP/s")
    hours = FLAGS.schedule_steps * step_s / 3600
    print(f"projected {FLAGS.schedule_steps} steps: {hours:.2f} h per stream ({2 * hours:.2f} h for RGB + flow), "
          "train step only (no input pipeline, checkpoints or logging)")

    if FLAGS.breakdown:
        # Where the time goes: the same pieces compiled on their own, timed back to back.
        def forward(data):
            return model._compute_losses(data[0], data[1], True)[2]

        def forward_backward(data):
            with tf.GradientTape() as tape:
                loss = model._compute_losses(data[0], data[1], True)[2]
            return tape.gradient(loss, model.trainable_variables)

        dh = tf.constant(rng.standard_normal((B * T, H)).astype(np.float32))
        pieces = [
            ("forward + loss", tf.function(forward, jit_compile=True), ((inputs, labels),), None),
            ("forward + loss + gradients", tf.function(forward_backward, jit_compile=True), ((inputs, labels),), None),
            ("train_step (tf.function, no fit)", traced, ((inputs, labels),), None),
            ("matmul X.W1 (forward shape)", matmul, (a, w), matmul_flops),
            ("matmul X^T.dH (weight-gradient shape)",
             tf.function(lambda x, y: tf.matmul(x, y, transpose_a=True), jit_compile=True), (a, dh), matmul_flops),
        ]
        print("breakdown (XLA, best of 3 x 5 calls):")
        for name, fn, args, flops in pieces:
            def call(*xs, fn=fn):
                return tf.nest.flatten(fn(*xs))[0]

            best = min(_time_calls(call, args, 5) for _ in range(3))
            rate = f", {flops / best / 1e9:.1f} GFLOP/s" if flops else ""
            print(f"  {name:40s} {best * 1e3:7.2f} ms{rate}")

    ratio = statistics.median(ratios)
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"RESULT train_step_vs_matmul_roofline={ratio:.3f}")


if __name__ == "__main__":
    app.run(main)

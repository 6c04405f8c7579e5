"""Localization speed at the shipped bounds: numpy reference vs the configured graph vs the Localizer vs the
SavedModel.

The bounds are the shipped config's (configs/thumos14.py, config.localize.*, equal to
LocalizerConfig's defaults): every passing class, 200 components per stream and class, 1000 detections
per video, so recall is not capped; the reference gets the same bounds. 212 videos with the real THUMOS14
test durations (the shipped stpn:thumos14/thumos14reduced: duration.npy, subset.npy), 25 fps / 16-frame
snippets, outputs on the 400-position grid, 20 classes, x24 interpolation. Model outputs are random but
smooth (a few long components per class, as a trained model gives); each video has two confident classes
and 18 with probabilities in [0, 0.12] (about 3.6 of which pass the 0.1 class threshold per stream).

Rows: the configured graph (`localize` at those bounds; what an export and Beam ran before issue 20, and
the fallback when a derived bound does not hold) under tf.function and XLA, then `Localizer`, which is what `stpn localize` from a work directory, `--raw`, the sweep and tune
call: eagerly it derives the bounds from the data (one row per
passing (video, class) pair, component slots from a first pass) with output identical to the configured
bounds (checked below), in batches of 16 (config.localize.batch_size) and of the whole split. The
first RESULT line is the Localizer on the whole split in one call against the reference, after compile.
Beside it, the numpy engine that `stpn localize --raw` runs without TensorFlow (stpn_tf.localize.numpy_engine:
the reference's algorithm vectorized within a class) on the same split, and whether it gives the Localizer's
float32 outputs.

Then the SavedModel path (what TF Serving, any TensorFlow client and Beam run): an export written by
`stpn_tf.inference.export.save_module` into a temporary directory, from stream "models" that pass the
outputs above through (each snippet's features are [attention, T-CAM, video logits], so the export
localizes the same outputs as the rows above on its 400-position grid), loaded bare with
`tf.saved_model.load` and called through `serving_default` on the whole split. Its detections are
compared with the eager Localizer on the export's own raw outputs (byte for byte) and with the numpy
reference, which is timed on those outputs: RESULT savedmodel_speedup_vs_reference (target >= 30).

Last, the serving input checks on random THUMOS14-size inputs (batch 16 x 1024 snippets x D = 1024,
random-weight STPN models): the serving graph with the checks (`serving_default`) and without them,
40 interleaved rounds, each timing one call of both: RESULT serving_check_overhead = the median over the
rounds of with / without, minus 1 (target <= 0.05).

Run: .venv/bin/python bench/localize.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stpn_tf.core import resources  # noqa: E402
from stpn_tf.artifacts.annotations import read_thumos14_durations, read_thumos14_subsets  # noqa: E402
from stpn_tf.localize import timeline  # noqa: E402
from stpn_tf.localize import Localizer, LocalizerConfig, localize  # noqa: E402
from stpn_tf.localize.reference import localize_video  # noqa: E402

FOLDER = resources.resource_path(resources.THUMOS14_REDUCED)
T, C, FPS, STRIDE = 400, 20, 25.0, 16
SETTINGS = LocalizerConfig(interpolation=24)  # the shipped bounds (LocalizerConfig's defaults)
BATCH = 16  # config.localize.batch_size


def make_inputs(seed: int = 0):
    durations_by_id = read_thumos14_durations(FOLDER)
    subsets = read_thumos14_subsets(FOLDER)
    durations = np.array([durations_by_id[v] for v in sorted(durations_by_id) if subsets[v] == "test"])
    sps = timeline.seconds_per_snippet(FPS, STRIDE)
    num_snippets = np.maximum(1, np.floor(durations / sps)).astype(np.int32)
    b = len(durations)
    rng = np.random.default_rng(seed)
    kernel = np.ones(9) / 9

    def smooth(x):
        return np.apply_along_axis(lambda row: np.convolve(row, kernel, "same"), 1, x)

    def stream():
        attention = smooth(rng.uniform(0, 1, (b, T))) ** 2
        tcam = smooth(rng.normal(0, 2, (b, T, C))) * 3
        probabilities = rng.uniform(0, .12, (b, C))
        for row in probabilities:
            row[rng.choice(C, 2, replace=False)] = rng.uniform(.5, 1., 2)
        return {"attention": attention.astype(np.float32), "tcam": tcam.astype(np.float32),
                "probabilities": probabilities.astype(np.float32)}

    rgb, flow = stream(), stream()
    return rgb, flow, num_snippets, np.full(b, sps, np.float32), durations.astype(np.float32)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rgb, flow, num_snippets, sps, durations = make_inputs()
    b = len(num_snippets)
    lengths = np.full(b, T, np.int32)
    print(f"videos={b} grid={T} classes={C} interpolation={SETTINGS.interpolation} "
          f"snippets min/median/max={num_snippets.min()}/{int(np.median(num_snippets))}/{num_snippets.max()} "
          f"max_classes_per_video={SETTINGS.max_classes_per_video} "
          f"max_components_per_class={SETTINGS.max_components_per_class} max_detections={SETTINGS.max_detections}")

    def pick(stream, sl):
        return {key: value[sl] for key, value in stream.items()}

    def reference_all():
        return [localize_video(pick(rgb, i), pick(flow, i), length=T, num_snippets=int(num_snippets[i]),
                               seconds_per_snippet=float(sps[i]), duration=float(durations[i]), config=SETTINGS)
                for i in range(b)]

    start = time.perf_counter()
    reference = reference_all()
    t_reference = time.perf_counter() - start
    print(f"numpy reference                  : {b / t_reference:9.1f} videos/s ({t_reference:.2f} s for the split)")

    def graph_inputs(sl):
        return (pick(rgb, sl), pick(flow, sl), tf.constant(lengths[sl]), tf.constant(num_snippets[sl]),
                tf.constant(sps[sl]), tf.constant(durations[sl]))

    def run(rgb_, flow_, lengths_, num_snippets_, sps_, durations_):
        return localize(rgb_, flow_, lengths=lengths_, num_snippets=num_snippets_, seconds_per_snippet=sps_,
                        durations=durations_, config=SETTINGS)

    everything = graph_inputs(slice(None))
    batches = [graph_inputs(slice(i, i + BATCH)) for i in range(0, b, BATCH)]

    def timed(label, fn, inputs, repeats=3):
        start = time.perf_counter()
        out = [fn(*args) for args in inputs[:1]]
        np.asarray(out[0]["num_detections"])  # tensors (the graph) or arrays (the eager Localizer)
        t_first = time.perf_counter() - start

        def all_batches():
            outs = [fn(*args) for args in inputs]
            return [np.asarray(o["num_detections"]) for o in outs]

        t = best_of(all_batches, repeats)
        print(f"{label:33s}: {b / t:9.1f} videos/s ({t:.3f} s for the split; first call {t_first:.2f} s)")
        return t

    timed(f"configured, tf.function, batch {b}", tf.function(run), [everything], repeats=2)
    for batch, inputs in ((BATCH, batches), (b, [everything])):
        timed(f"configured, XLA, batch {batch}", tf.function(run, jit_compile=True), inputs)
    fixed = tf.function(run, jit_compile=True)(*everything)

    localizer = Localizer(SETTINGS)

    def derived(rgb_, flow_, lengths_, num_snippets_, sps_, durations_):
        return localizer(rgb_, flow_, lengths=lengths_, num_snippets=num_snippets_, seconds_per_snippet=sps_,
                         durations=durations_)

    timed(f"Localizer (derived), batch {BATCH}", derived, batches)
    t_localizer = timed(f"Localizer (derived), batch {b}", derived, [everything])
    final = derived(*everything)

    got = final["num_detections"]
    expected = np.array([len(r) for r in reference])
    agree = sum(
        got[i] == expected[i]
        and np.allclose(final["detection_scores"][i, :got[i]], [d.score for d in reference[i]], atol=1e-5)
        for i in range(b))
    identical = all(np.array_equal(final[key], fixed[key].numpy()) for key in fixed)
    print(f"detections per video mean/max {expected.mean():.1f}/{expected.max()} (the bound: "
          f"{SETTINGS.max_detections}); the Localizer agrees with the reference on {agree}/{b} videos and is "
          f"{'identical' if identical else 'NOT identical'} to the configured graph; fallbacks to the configured "
          f"bounds: {localizer.fallbacks}; functions compiled: {localizer.tracing_count()}")
    print(f"RESULT xla_speedup_vs_reference={t_reference / t_localizer:.1f}")
    numpy_engine(rgb, flow, num_snippets, sps, durations, final, t_localizer)
    speedup = savedmodel(rgb, flow, durations)
    print(f"RESULT savedmodel_speedup_vs_reference={speedup:.1f}")
    overhead = serving_checks()
    print(f"RESULT serving_check_overhead={overhead:.3f}")


class PassThrough(tf.Module):
    """A stream "model" whose features carry its outputs: [attention, T-CAM (C), video logits (C)] per
    snippet (the logits are read at the first position)."""

    num_classes = C

    def __call__(self, inputs, training=False):
        x = inputs["features"]
        return {"attention": x[:, :, 0], "tcam": x[:, :, 1:1 + C], "video_logits": x[:, 0, 1 + C:]}


def savedmodel(rgb, flow, durations) -> float:
    """The export's serving_default on the whole split (see the module docstring); returns the speedup."""
    import tempfile

    from stpn_tf.data.grid import GridConfig
    from stpn_tf.inference.export import save_module
    from stpn_tf.inference.module import InferenceModule

    b = len(durations)

    def features(stream):
        p = stream["probabilities"].astype(np.float64)
        logits = np.broadcast_to((np.log(p) - np.log1p(-p))[:, np.newaxis, :], (b, T, C))
        return np.concatenate([stream["attention"][..., np.newaxis], stream["tcam"], logits], -1).astype(np.float32)

    module = InferenceModule({"rgb": PassThrough(), "flow": PassThrough()}, [f"c{i}" for i in range(C)],
                             grid=GridConfig(length=T), localizer=Localizer(SETTINGS), feature_dim=1 + 2 * C)
    inputs = dict(rgb=tf.constant(features(rgb)), flow=tf.constant(features(flow)),
                  num_snippets=tf.constant(np.full(b, T, np.int32)),
                  seconds_per_snippet=tf.constant((durations / T).astype(np.float32)))
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        save_module(module, os.path.join(scratch, "export"))
        t_export = time.perf_counter() - start
        start = time.perf_counter()
        serve = tf.saved_model.load(os.path.join(scratch, "export")).signatures["serving_default"]
        out = {key: value.numpy() for key, value in serve(**inputs).items()}
        t_first = time.perf_counter() - start
        t_saved = best_of(lambda: serve(**inputs)["num_detections"].numpy(), 5)
    print(f"SavedModel serving_default, batch {b}: {b / t_saved:9.1f} videos/s ({t_saved:.3f} s for the split; "
          f"export {t_export:.1f} s, load + first call {t_first:.1f} s)")

    def stream(s):
        return {"attention": out["attention"][:, s], "tcam": out["tcam"][:, s],
                "probabilities": out["video_probabilities"][:, s]}

    sps = inputs["seconds_per_snippet"].numpy()
    eager = Localizer(SETTINGS)(stream(0), stream(1), lengths=out["grid_length"], num_snippets=out["num_snippets"],
                                seconds_per_snippet=sps)
    identical = all(np.array_equal(out[key], eager[key]) for key in eager)
    start = time.perf_counter()
    reference = [localize_video({k: v[i] for k, v in stream(0).items()}, {k: v[i] for k, v in stream(1).items()},
                                length=T, num_snippets=T, seconds_per_snippet=float(sps[i]), config=SETTINGS)
                 for i in range(b)]
    t_reference = time.perf_counter() - start
    got = out["num_detections"]
    agree = sum(got[i] == len(reference[i]) and np.allclose(out["detection_scores"][i, :got[i]],
                                                             [d.score for d in reference[i]], atol=1e-5)
                for i in range(b))
    print(f"numpy reference on the export's outputs: {t_reference:.2f} s; the SavedModel agrees with it on "
          f"{agree}/{b} videos and is {'identical' if identical else 'NOT identical'} to the eager Localizer")
    return t_reference / t_saved


def numpy_engine(rgb, flow, num_snippets, sps, durations, final, t_localizer) -> None:
    """The numpy engine (`stpn localize --raw`'s default) on the same split: its time, and whether its
    float32 outputs are the Localizer's."""
    from stpn_tf.localize.numpy_engine import localize_arrays

    b = len(num_snippets)
    start = time.perf_counter()
    out = [localize_arrays({k: v[i] for k, v in rgb.items()}, {k: v[i] for k, v in flow.items()}, length=T,
                           num_snippets=int(num_snippets[i]), seconds_per_snippet=float(sps[i]),
                           duration=float(durations[i]), config=SETTINGS) for i in range(b)]
    t_numpy = time.perf_counter() - start
    same = sum(len(scores) == final["num_detections"][i]
               and np.array_equal(labels, final["detection_classes"][i, :len(labels)])
               and np.array_equal(scores.astype(np.float32), final["detection_scores"][i, :len(scores)])
               and np.array_equal(seconds.astype(np.float32), final["detection_segments"][i, :len(scores)])
               for i, (labels, scores, seconds) in enumerate(out))
    print(f"numpy engine (stpn localize --raw): {b / t_numpy:9.1f} videos/s ({t_numpy:.2f} s for the split, "
          f"{t_numpy / t_localizer:.1f}x the Localizer's time, no TensorFlow); the Localizer's float32 outputs on "
          f"{same}/{b} videos")


def serving_setup(batch: int = 16, time_steps: int = 1024, dim: int = 1024):
    """(InferenceModule of two random-weight STPN models at the shipped bounds, random THUMOS14-size serving
    inputs): what the serving benchmarks call."""
    from stpn_tf.data.grid import GridConfig
    from stpn_tf.model.stpn import STPN
    from stpn_tf.localize.localizer import Localizer
    from stpn_tf.inference.module import InferenceModule

    models = {}
    for stream in ("rgb", "flow"):
        models[stream] = STPN(C)
        models[stream]({"features": tf.zeros([1, 4, dim]), "mask": tf.ones([1, 4])})
    module = InferenceModule(models, [f"c{i}" for i in range(C)], grid=GridConfig(),
                             localizer=Localizer(LocalizerConfig(interpolation=24)))
    rng = np.random.default_rng(0)
    inputs = dict(rgb=tf.constant(rng.normal(size=(batch, time_steps, dim)).astype(np.float32)),
                  flow=tf.constant(rng.normal(size=(batch, time_steps, dim)).astype(np.float32)),
                  num_snippets=tf.constant(rng.integers(100, time_steps, batch).astype(np.int32)),
                  seconds_per_snippet=tf.constant(np.full(batch, .64, np.float32)))
    return module, inputs


def serving_checks(batch: int = 16, time_steps: int = 1024, dim: int = 1024) -> float:
    """What the export's input checks (NaN / size / count assertions outside the compiled part) cost: the
    whole serving graph with and without them, on random THUMOS14-size inputs and random-weight models.
    Returns with / without - 1."""
    module, inputs = serving_setup(batch, time_steps, dim)
    unchecked = tf.function(lambda rgb, flow, num_snippets, seconds_per_snippet: module.run(
        rgb, flow, num_snippets, seconds_per_snippet))
    # The floor of any check that reads every feature: one sum over each input and nothing else.
    read_once = tf.function(lambda rgb, flow, num_snippets, seconds_per_snippet: {
        "num_detections": tf.stack([tf.reduce_sum(rgb), tf.reduce_sum(flow)])})
    functions = {"with the input checks (serving_default)": module.serve, "without them": unchecked,
                 "reading both inputs once alone": read_once}
    times = {name: [] for name in functions}
    for fn in functions.values():
        fn(**inputs)["num_detections"].numpy()
    for _ in range(40):  # interleaved, so that a burst of other load hits both alike
        for name, fn in functions.items():
            start = time.perf_counter()
            fn(**inputs)["num_detections"].numpy()
            times[name].append(time.perf_counter() - start)
    timings = {name: min(t) for name, t in times.items()}
    # The overhead is the median over the 40 rounds of (checked / unchecked) of one round: the quotient of two
    # minima swung from 0.01 to 0.12 between runs on this machine, the paired median by about 0.02.
    with_checks, without, _ = times.values()
    overhead = float(np.median(np.asarray(with_checks) / np.asarray(without))) - 1.0
    print("serving graph, batch {} x {} snippets x D={}: {}".format(batch, time_steps, dim, "; ".join(
        f"{name} {1000 * t:.1f} ms per call" for name, t in timings.items())))
    _, without, floor = timings.values()
    print(f"  a check reading every feature costs at least {100 * floor / without:.1f} % of the unchecked call "
          f"(one read of both inputs); the checks' cost, median of 40 paired calls: {100 * overhead:.1f} %")
    return overhead


if __name__ == "__main__":
    main()

"""The Localizer: the one postprocessor module, its buckets and its eager path over (video, class) rows.

Called inside a graph (the export's SavedModel, Beam) it runs the same derived-bounds scheme as graph ops
(`serving.py`: the passing rows gathered outside XLA, compiled row functions picked by `tf.switch_case`,
the configured graph `graph.localize` under `tf.cond` when a derived bound does not hold). Called eagerly
(`stpn localize`, the sweep, the demo) it takes numpy arrays and returns numpy arrays: a numpy first pass
(`bounds.py`) derives bounds from the data, the (video, class) pairs that pass run as rows of one compiled
call, and the rows' detections are merged in numpy, with output identical to the configured graph.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from stpn_tf.core.buckets import bucket
from stpn_tf.core.errors import StpnError
from stpn_tf.localize.bounds import component_count_bound, passing_class_bound
from stpn_tf.localize.checks import STREAM_KEYS, check_keys, check_lengths, check_shapes
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.localize.graph import as_stream, localize, localize_with_bounds, runtime_tensors
from stpn_tf.localize.serving import localize_in_graph


def _as_array(value, dtype=None) -> np.ndarray:
    """`value` as a numpy array: arrays are cast to `dtype`, tensors and Python values converted as
    `tf.convert_to_tensor` does (Python floats become float32, as they did when the Localizer took tensors)."""
    if isinstance(value, np.ndarray):
        return value if dtype is None else value.astype(dtype, copy=False)
    return tf.convert_to_tensor(value, dtype).numpy()


# Eager calls: rows x interpolated positions x thresholds per compiled call. 2^22 measured best in
# bench/tune.py (a budget without the interpolation factor, i.e. 24x more rows per call, peaked at 6.4 GB
# instead of 3.9 GB and was slower); large splits see one row shape.
ROW_ELEMENTS = 2 ** 22
# Compiled calls of an eager call's row chunks in flight at once (`_run_jobs`). One call alone leaves part
# of the second core idle (stretches of the compiled NMS and top-k run on one thread; a profile of the
# serving graph's localization showed 1.45 of 2 cores busy); two at a time fill both: `stpn tune` on the
# demo 124.6 -> 103-115 s, bench/tune.py 138.6 -> 116.0 s, for a higher peak (1,730 -> 1,990 MB there: a
# second chunk's buffers and allocator arenas). XLA compiles do not overlap (they run one at a time in the
# process). One on a one-core machine.
ROW_THREADS = min(2, os.cpu_count() or 1)
_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _run_jobs(call, jobs: list) -> list:
    """[call(*job) for job in jobs], ROW_THREADS at a time on a pool made once per process when there are
    several jobs (an error is raised and the jobs not started are cancelled)."""
    global _POOL
    if len(jobs) < 2 or ROW_THREADS < 2:
        return [call(*job) for job in jobs]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(ROW_THREADS, thread_name_prefix="stpn_rows")
    return list(_POOL.map(lambda job: call(*job), jobs))


class _Functions:
    """The compiled functions of one (structure, jit_compile), shared by every Localizer of it in the process.

    They read only the structure of the config they are made with (the runtime settings are inputs), so
    Localizers of equal structure, however their settings differ, trace and compile each row shape once per
    process instead of once each (a work directory localized, swept, tuned and exported in one process, and
    the tests). Kept out of tf.Module's tracking (which would wrap the dicts and refuse to save their int
    keys): the SavedModel keeps the ones its signatures call anyway.
    """

    def __init__(self, config: LocalizerConfig, jit_compile: bool):
        self.config = config
        self.jit_compile = jit_compile

        def run(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, settings):
            return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                            seconds_per_snippet=seconds_per_snippet, durations=durations, config=config,
                            settings=settings)

        self.configured = tf.function(run, jit_compile=jit_compile, autograph=False)  # explicit control flow
        # One function per component-slot bucket over (video, class) rows (eager and graph calls), and the
        # configured bounds with a class bucket Q' for eager batches where a derived bound does not hold.
        self.rows: dict[int | None, tf.types.experimental.PolymorphicFunction] = {}
        self.bucketed: dict[int, tf.types.experimental.PolymorphicFunction] = {}
        self._concrete: dict[tuple, tf.types.experimental.ConcreteFunction] = {}  # see `concrete`
        self._row_shapes: set[tuple] = set()  # (function, input shapes) of eager rows calls under XLA
        self._lock = threading.Lock()

    def tracing_count(self) -> int:
        """Compiles: traces of the configured functions, and of the rows functions either each row shape
        called eagerly (XLA compiles once per shape of a function traced with unknown sizes) or, without
        XLA, their traces."""
        rows = len(self._row_shapes) if self.jit_compile else sum(
            f.experimental_get_tracing_count() for f in self.rows.values())
        return self.configured.experimental_get_tracing_count() + rows + sum(
            f.experimental_get_tracing_count() for f in self.bucketed.values())

    def rows_function(self, slots: int | None):
        """The compiled function over (video, class) rows with `slots` component slots (None: M)."""
        if slots not in self.rows:
            config = self.config.replace(max_classes_per_video=None)
            m = config.max_components_per_class if slots is None else slots
            detections = min(config.max_detections, 2 * m)

            def run(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, runtime):
                return localize_with_bounds(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                            seconds_per_snippet=seconds_per_snippet, durations=durations,
                                            config=config, settings=runtime, component_slots=slots,
                                            detection_slots=detections, pad_outputs=False)

            # Without XLA one trace serves every row count and length (reduce_retracing: None dims).
            # autograph off: graph.py writes its control flow as tf.cond / tf.while_loop, and converting
            # it anyway cost about 3 s of CPU per process (half of a `stpn localize --raw` on the demo).
            self.rows[slots] = tf.function(run, jit_compile=self.jit_compile,
                                           reduce_retracing=not self.jit_compile, autograph=False)
        return self.rows[slots]

    def bucketed_function(self, classes: int):
        """The configured bounds with Q' = `classes` (the eager fallback; see Localizer._class_bucket)."""
        if classes not in self.bucketed:
            config = self.config.replace(max_classes_per_video=classes)

            def run(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, runtime):
                return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                seconds_per_snippet=seconds_per_snippet, durations=durations, config=config,
                                settings=runtime)

            self.bucketed[classes] = tf.function(run, jit_compile=self.jit_compile, autograph=False)
        return self.bucketed[classes]

    def concrete(self, name: str, function, relax: bool = False):
        """`function` as a concrete function for the call's input specs, traced once per process and
        structure and then called as it is (a function op inside a graph).

        Inside a graph (relax False; the graph's shapes are mostly unknown already) this spares a trace per
        call site: each export signature, each slot branch of the serving graph, each module built in memory.
        Eager rows calls under XLA (relax True) trace once with the row count and length unknown, and XLA
        compiles the one trace for each row shape: the same compiled program a trace per shape gave (the
        export's in-graph rows, traced this way, are byte-identical to the eager Localizer), without a
        Python trace of seconds per row width. The last argument (the runtime settings) keeps its shapes:
        the number of thresholds must be static.
        """
        def spec(t, relaxed):
            return tf.TensorSpec([None if relaxed and i < 2 else d for i, d in enumerate(t.shape)], t.dtype)

        def call(*args):
            if relax:
                args = [None if a is None else tf.nest.map_structure(tf.convert_to_tensor, a) for a in args]
                shapes = tuple(tuple(t.shape) for t in tf.nest.flatten(args[:-1]) if t is not None)
                self._row_shapes.add((name, shapes))
            specs = [None if a is None else tf.nest.map_structure(
                lambda t, r=relax and i < len(args) - 1: spec(t, r), a) for i, a in enumerate(args)]
            key = (name, relax, str(specs))
            with self._lock:  # one trace, also when the chunks of a call run on several threads
                if key not in self._concrete:
                    self._concrete[key] = function.get_concrete_function(*specs)
                concrete = self._concrete[key]
            return concrete(*args)

        return call


# The functions of the `_SHARED_SIZE` most recently made structures (a bounded cache: a structure dropped
# here stays alive only as long as a Localizer holds it).
_SHARED: collections.OrderedDict[tuple, _Functions] = collections.OrderedDict()
_SHARED_SIZE = 8
_SHARED_LOCK = threading.Lock()  # Localizers may be made in several threads (Beam's DoFn setup)


def _functions_for(config: LocalizerConfig, jit_compile: bool, share: bool) -> _Functions:
    if not share:
        return _Functions(config, jit_compile)
    key = (config.structure(), jit_compile)
    with _SHARED_LOCK:
        if key in _SHARED:
            _SHARED.move_to_end(key)
        else:
            while len(_SHARED) >= _SHARED_SIZE:
                _SHARED.popitem(last=False)
            _SHARED[key] = _Functions(config, jit_compile)
        return _SHARED[key]


class Localizer(tf.Module):
    """The one postprocessor: stream outputs -> padded detections, as one (XLA-compiled) function.

    Holds a LocalizerConfig; `get_config()` / `from_config()` round-trip it. The export, `stpn localize`,
    the sweep and Beam all localize through this module (inside a SavedModel too: stpn_tf.inference).

    Eager calls (`stpn localize`, the sweep) derive the bounds from the data, with output identical
    to the configured bounds (see `_localize_rows`); inside a graph (the export's SavedModel, Beam, which
    have no eager step) the same derivation runs as graph ops (stpn_tf.localize.serving), byte-identical
    to the eager call.

    Args:
      config: The localization settings.
      jit_compile: Compile with XLA (identical results; tests/test_localize.py checks it).
      row_elements: Eager calls: (video, class) rows x interpolated positions x thresholds per compiled
        call; more rows run in several calls of one shape (memory and compiles stay bounded; the output
        does not depend on it).
      derive_slots: Eager calls: size the component slots from the data (a function per slot bucket), or
        always use M (one function per row shape: fewer compiles, somewhat slower calls; the sweep, which
        tries hundreds of settings, does). The output is the same either way.
      derive_in_graph: Inside a graph, derive the bounds from the data (True) or run the configured
        bounds as they are (False: the reference the tests and bench/localize.py compare with).
      share_functions: Use the compiled functions of this structure that other Localizers in the process
        made (`_Functions`), or functions of its own (for counting its compiles from zero).
    """

    def __init__(self, config: LocalizerConfig = LocalizerConfig(), *, jit_compile: bool = True,
                 name: str | None = None, row_elements: int = ROW_ELEMENTS, derive_in_graph: bool = True,
                 derive_slots: bool = True, share_functions: bool = True):
        super().__init__(name=name)
        if not isinstance(config, LocalizerConfig):
            raise StpnError(f"Localizer: config must be a LocalizerConfig, got {type(config).__name__}")
        self.config = config
        self.jit_compile = bool(jit_compile)
        self.row_elements = int(row_elements)
        self.derive_slots = bool(derive_slots)
        self.derive_in_graph = bool(derive_in_graph)
        self._functions = _functions_for(config, self.jit_compile, share_functions)
        self._traced_before = self._functions.tracing_count()
        self.fallbacks = 0  # eager batches that ran the configured bounds (a derived one did not hold)
        self._runtime: dict[LocalizerConfig, dict[str, tf.Tensor]] = {}

    @property
    def _compiled(self):
        """The configured graph (graph calls with derive_in_graph False; the eager fallback)."""
        return self._functions.configured

    @property
    def _rows(self) -> dict:
        """Eager and graph calls: one function over (video, class) rows per component-slot bucket."""
        return self._functions.rows

    def _runtime_tensors(self, settings: LocalizerConfig) -> dict[str, tf.Tensor]:
        """`runtime_tensors(settings)`, made once per settings (eager calls)."""
        if settings not in self._runtime:
            if len(self._runtime) > 256:
                self._runtime.clear()
            value = self._runtime[settings] = runtime_tensors(settings)
            return value
        return self._runtime[settings]

    def get_config(self) -> dict:
        return {**self.config.to_dict(), "jit_compile": self.jit_compile}

    @classmethod
    def from_config(cls, config: Mapping) -> "Localizer":
        settings = dict(config)
        jit_compile = settings.pop("jit_compile", True)
        return cls(LocalizerConfig.from_dict(settings), jit_compile=jit_compile)

    def tracing_count(self) -> int:
        """How many times its functions were compiled since this Localizer was made: one per input shape
        and bucket (with shared functions, compiles for other Localizers of the structure count too)."""
        return self._functions.tracing_count() - self._traced_before

    def _class_bucket(self, rgb, flow, settings: LocalizerConfig):
        """The configured bounds with a class bound Q' from the data (the fallback of `_localize_rows`).

        When at most Q' < Q classes pass class_threshold in every video of the batch, localizing the
        Q' most probable ones gives identical output; Q' is the smallest of 4, 8, 16, ... that fits.
        """
        total = rgb["tcam"].shape[2]
        bound = self.config.max_classes_per_video or total
        classes = bucket(passing_class_bound(rgb, flow, settings.class_threshold), 4)
        if classes >= bound:
            return self._compiled
        return self._functions.bucketed_function(classes)

    def _row_groups(self, row_lengths: np.ndarray, num_positions: int) -> list[tuple[int, np.ndarray]]:
        """[(positions T', the rows run at T')]: each row runs at the first width of a ladder that holds its
        length, so the short videos of all-snippet outputs (padded to the longest video) do not pay for the
        longest one. Under XLA, where each new shape is a compile of seconds, the ladder is coarse and fixed
        by T alone (128, 512, 2048, ... below T / 2, then T); without XLA, where a new shape costs no
        compile, it is every power of two from 64."""
        if self.jit_compile:
            ladder = [w for w in (128 * 4 ** i for i in range(12)) if w <= num_positions // 2]
        else:
            ladder = [w for w in (64 * 2 ** i for i in range(20)) if w < num_positions]
        ladder = np.array([*ladder, num_positions])
        width = ladder[np.searchsorted(ladder, np.minimum(row_lengths, num_positions))]
        return [(int(t), np.flatnonzero(width == t)) for t in np.unique(width)]

    def _run_rows(self, streams, video, klass, lengths, num_snippets, seconds_per_snippet, durations,
                  settings: LocalizerConfig):
        """The (video, class) rows through the rows function: (count [N], scores32 [N, D], segments [N, D, 2],
        score64 [N, D]) in row order, or four Nones when a derived bound did not hold (see `_localize_rows`).

        Rows run in groups of one length (`_row_groups`) and in chunks of at most `chunk` rows, so a call's
        buffers (rows x positions x thresholds) stay under `row_elements` whatever the split's size (ROW_THREADS
        calls at a time); under XLA large splits see one row shape (a chunk) instead of one per row count.
        """
        num_rows, num_positions = len(video), streams[0]["tcam"].shape[1]
        per_position = self.config.interpolation * len(self.config.thresholds)
        plans, needed = [], 0
        for width, members in self._row_groups(lengths[video], num_positions):
            row_video, row_class = video[members], klass[members]
            row_length = lengths[row_video].astype(np.int32)
            rows = [{"attention": s["attention"][row_video, :width],
                     "tcam": s["tcam"][row_video, :width, row_class][:, :, np.newaxis],
                     "probabilities": s["probabilities"][row_video, row_class][:, np.newaxis]} for s in streams]
            per_row = component_count_bound(*rows, row_length, settings).reshape(len(members), -1)
            needed = max(needed, int(per_row.max(initial=0)))
            # Rows with few components first: the NMS loop of a call stops after its largest valid count,
            # so a chunk of sparse rows does not pay for the busiest row of the split.
            order = np.argsort(per_row.sum(axis=1), kind="stable")
            members, row_video, row_length = members[order], row_video[order], row_length[order]
            rows = [{k: v[order] for k, v in r.items()} for r in rows]
            n = len(members)
            chunk = max(1, 2 ** int(np.floor(np.log2(max(1, self.row_elements // max(1, width * per_position))))))
            if not self.jit_compile:  # any row count is the same function: no padding
                padded, chunk = n, min(chunk, n)
            elif n > chunk:  # few row shapes under XLA: whole chunks, ...
                padded = -(-n // chunk) * chunk
            else:  # ... one chunk from a quarter chunk up, a power of two (>= 16) below
                padded = chunk = chunk if n > chunk // 4 else min(chunk, bucket(n, 16))
            if padded > n:  # empty rows (length 0: no components) up to the call shape
                pad = lambda x: np.concatenate([x, np.zeros((padded - n, *x.shape[1:]), x.dtype)])  # noqa: E731
                row_video, row_length = pad(row_video), pad(row_length)
                rows = [{k: pad(v) for k, v in r.items()} for r in rows]
            plans.append((members, row_video, row_length, rows, padded, chunk))
        slots = bucket(needed, 8) if self.derive_slots else self.config.max_components_per_class
        slots = slots if slots < self.config.max_components_per_class else None
        function, runtime = self._functions.rows_function(slots), self._runtime_tensors(settings)
        if self.jit_compile:
            function = self._functions.concrete(f"rows{slots}", function, relax=True)

        def call(plan, lo):
            """One chunk of a group: (overflow, its real rows, counts, scores32, segments, score64)."""
            members, row_video, row_length, rows, _, chunk = plans[plan]
            part = slice(lo, lo + chunk)
            pick = lambda x: tf.constant(x[row_video[part]])  # noqa: E731
            found, overflow, found64 = function(
                *({k: v[part] for k, v in r.items()} for r in rows), tf.constant(row_length[part]),
                pick(num_snippets), pick(seconds_per_snippet), pick(durations), runtime)
            real = members[lo:lo + chunk]  # the chunk's rows that are not padding
            n = len(real)
            return (bool(overflow), real, found["num_detections"].numpy()[:n], found["detection_scores"].numpy()[:n],
                    found["detection_segments"].numpy()[:n], found64.numpy()[:n])

        # The chunks run ROW_THREADS at a time; each gives its own rows, so the output does not depend on
        # which finishes first.
        results = _run_jobs(call, [(i, lo) for i, (*_, padded, chunk) in enumerate(plans)
                                   for lo in range(0, padded, chunk)])
        count = np.zeros(num_rows, np.int32)
        scores32 = segments = score64 = None
        for overflow, real, found_count, found_scores, found_segments, found64 in results:
            if overflow:
                return None, None, None, None
            if score64 is None:
                width = found64.shape[1]
                scores32, score64 = np.zeros((num_rows, width), np.float32), np.zeros((num_rows, width))
                segments = np.zeros((num_rows, width, 2), np.float32)
            count[real], scores32[real], segments[real], score64[real] = (
                found_count, found_scores, found_segments, found64)
        return count, scores32, segments, score64

    def _localize_rows(self, rgb, flow, lengths, num_snippets, seconds_per_snippet, durations,
                       settings: LocalizerConfig):
        """Eager localization with bounds derived from the data; None when a derived bound does not hold.

        Every (video, class) pair whose class passes class_threshold in a stream (at most Q per video,
        the most probable, as `localize` picks them) becomes one row: a one-class "video" with that
        video's length and timing. The rows are localized with S component slots, S >=
        `component_count_bound` of every row and stream (then the M cut selects nothing), and the K cut
        skipped (a row's detections are its kept candidates in NMS order), in compiled calls of a bounded
        number of rows (`row_elements`; one row shape per data set and structure), padded with empty rows
        (length 0). The detections of each video are then merged in numpy in the final order (float64
        score descending, class, NMS order), cut to the K best as `localize` cuts them. That is exactly
        `localize`'s output unless the graph finds a row with more than S components or two candidates
        tie in float32 across a video's K cut; then None (the caller runs the configured bounds). Work
        and memory scale with the passing pairs instead of videos x classes x M.
        """
        streams = [rgb, flow]
        batch, _, num_classes = streams[0]["tcam"].shape
        max_detections = self.config.max_detections
        kept = [s["probabilities"].astype(np.float64) >= settings.class_threshold for s in streams]
        priority = np.maximum(*(np.where(k, s["probabilities"], -1.0) for k, s in zip(kept, streams)))
        if self.config.max_classes_per_video is not None and self.config.max_classes_per_video < num_classes:
            # The Q most probable passing classes (ties: lower class index), as in `localize`.
            rank = np.argsort(np.argsort(-priority, axis=1, kind="stable"), axis=1, kind="stable")
            selected = (kept[0] | kept[1]) & (rank < self.config.max_classes_per_video)
        else:
            selected = kept[0] | kept[1]
        video, klass = np.nonzero(selected)                                   # rows in (video, class) order
        num_rows = len(video)
        outputs = {"detection_classes": np.full((batch, max_detections), -1, np.int32),
                   "detection_scores": np.zeros((batch, max_detections), np.float32),
                   "detection_segments": np.zeros((batch, max_detections, 2), np.float32),
                   "num_detections": np.zeros(batch, np.int32)}
        if num_rows:
            count, scores32, segments, score64 = self._run_rows(
                streams, video, klass, lengths, num_snippets, seconds_per_snippet, durations, settings)
            if count is None:
                return None
            per_video = np.bincount(video, weights=count, minlength=batch).astype(np.int64)
            row, slot = np.nonzero(np.arange(score64.shape[1])[np.newaxis, :] < count[:, np.newaxis])
            score = score64[row, slot]
            if per_video.max(initial=0) > max_detections:
                # The K cut: `localize` keeps each video's K best by the float32 rounding of the score
                # (ops.select_top). Unless two candidates tie in float32 across the cut, those are its K
                # best in float64, which the final order below puts first; with such a tie, the configured
                # path decides.
                key = np.lexsort((slot, klass[row], -score.astype(np.float32), video[row]))
                owner = video[row[key]]
                rank = np.arange(len(key)) - (np.cumsum(per_video) - per_video)[owner]
                rounded = score[key].astype(np.float32)
                cut = np.flatnonzero(rank == max_detections)  # the first candidate past the cut, per video
                if np.any(rounded[cut] == rounded[cut - 1]):
                    return None
                inside = np.sort(key[rank < max_detections])
                row, slot, score = row[inside], slot[inside], score[inside]
                per_video = np.minimum(per_video, max_detections)
            order = np.lexsort((slot, klass[row], -score, video[row]))
            row, slot = row[order], slot[order]
            owner = video[row]
            position = np.arange(len(row)) - (np.cumsum(per_video) - per_video)[owner]
            if settings.detections_per_video:  # the N best of each video (rows were cut to N already)
                inside = position < settings.detections_per_video
                row, slot, owner, position = row[inside], slot[inside], owner[inside], position[inside]
                per_video = np.minimum(per_video, settings.detections_per_video)
            outputs["detection_classes"][owner, position] = klass[row]
            outputs["detection_scores"][owner, position] = scores32[row, slot]
            outputs["detection_segments"][owner, position] = segments[row, slot]
            outputs["num_detections"] = per_video.astype(np.int32)
        return outputs

    def __call__(self, rgb: Mapping, flow: Mapping, *, lengths, num_snippets, seconds_per_snippet, durations=None,
                 settings: LocalizerConfig | None = None) -> dict:
        """See `graph.localize` for arguments and outputs.

        Inside a graph the arguments and outputs are tensors; called eagerly they are numpy arrays (tensors
        and lists are accepted too), and so are the outputs.

        `settings` replaces the runtime settings (RUNTIME_FIELDS) of this call without a new compile; its
        structure (LocalizerConfig.structure) must be this Localizer's. (Eager calls compile once per
        bucket of the derived bounds: a few per data set, whatever the settings.)
        """
        if settings is None:
            settings = self.config
        elif settings.structure() != self.config.structure():
            raise StpnError(f"Localizer: settings of structure {settings.structure()} given to a Localizer of "
                            f"structure {self.config.structure()} (interpolation, number of thresholds, "
                            "bounds); build a Localizer for them")
        if not tf.executing_eagerly():  # inside a graph (the export): the derived bounds as graph ops
            rgb, flow = as_stream("rgb", rgb), as_stream("flow", flow)
            check_shapes(rgb, flow)
            lengths = tf.convert_to_tensor(lengths, tf.int32)
            # No durations: NaN, which the graph reads as L * seconds_per_snippet. Calls with and without
            # durations (the two export signatures) then share every traced function.
            args = (lengths, tf.convert_to_tensor(num_snippets, tf.int32),
                    tf.convert_to_tensor(seconds_per_snippet, tf.float32),
                    tf.fill(tf.shape(lengths), float("nan")) if durations is None else
                    tf.convert_to_tensor(durations, tf.float32))
            runtime = runtime_tensors(settings)
            if not self.derive_in_graph:
                return self._compiled(rgb, flow, *args, runtime)
            lengths, num_snippets, seconds_per_snippet, durations = args
            functions = self._functions
            return localize_in_graph(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                     seconds_per_snippet=seconds_per_snippet, durations=durations,
                                     config=self.config, settings=settings, runtime=runtime,
                                     rows_function=lambda slots: functions.concrete(
                                         f"rows{slots}", functions.rows_function(slots)),
                                     configured=functions.concrete("configured", functions.configured),
                                     row_elements=self.row_elements)
        return self._call_eagerly(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                  seconds_per_snippet=seconds_per_snippet, durations=durations, settings=settings)

    def _call_eagerly(self, rgb, flow, *, lengths, num_snippets, seconds_per_snippet, durations,
                      settings: LocalizerConfig) -> dict[str, np.ndarray]:
        """The eager path: numpy in, numpy out (derived bounds, else the configured ones with a class bucket)."""
        check_keys("rgb", rgb)
        check_keys("flow", flow)
        rgb, flow = ({key: _as_array(stream[key]) for key in STREAM_KEYS} for stream in (rgb, flow))
        lengths = _as_array(lengths, np.int32)
        num_snippets, seconds_per_snippet = _as_array(num_snippets, np.int32), _as_array(seconds_per_snippet, np.float32)
        # No durations: NaN, read as L * seconds_per_snippet (one traced function with durations or without).
        durations = np.full(lengths.shape, np.nan, np.float32) if durations is None else _as_array(
            durations, np.float32)
        check_shapes(rgb, flow)
        check_lengths(lengths, rgb["tcam"].shape[1], caller="Localizer")
        outputs = self._localize_rows(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, settings)
        if outputs is None:
            self.fallbacks += 1
            tensors = lambda stream: {key: tf.constant(value) for key, value in stream.items()}  # noqa: E731
            outputs = self._class_bucket(rgb, flow, settings)(
                tensors(rgb), tensors(flow), tf.constant(lengths), tf.constant(num_snippets),
                tf.constant(seconds_per_snippet), tf.constant(durations),
                self._runtime_tensors(settings))
            outputs = {key: value.numpy() for key, value in outputs.items()}
        return outputs

"""The Localizer: the one postprocessor module, its buckets and its eager path over (video, class) rows.

Called inside a graph (the export's SavedModel) it runs the configured graph (`graph.localize`) on
tensors. Called eagerly (`stpn localize`, the sweep, Beam, the demo) it takes numpy arrays and returns
numpy arrays: a numpy first pass (`bounds.py`) derives bounds from the data, the (video, class) pairs
that pass run as rows of one compiled call, and the rows' detections are merged in numpy, with output
identical to the configured graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from stpn_tf.core.buckets import bucket
from stpn_tf.core.errors import StpnError
from stpn_tf.localize.bounds import component_count_bound, passing_class_bound
from stpn_tf.localize.checks import STREAM_KEYS, check_keys, check_lengths, check_shapes
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.localize.graph import as_stream, localize, localize_with_bounds, runtime_tensors


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


class Localizer(tf.Module):
    """The one postprocessor: stream outputs -> padded detections, as one (XLA-compiled) function.

    Holds a LocalizerConfig; `get_config()` / `from_config()` round-trip it. The export, `stpn localize`,
    the sweep and Beam all localize through this module (inside a SavedModel too: stpn_tf.inference).

    Eager calls (`stpn localize`, the sweep, Beam) derive the bounds from the data, with output identical
    to the configured bounds (see `_localize_rows`); inside a graph (the export's SavedModel, which has
    no eager step) the configured bounds run as they are.

    Args:
      config: The localization settings.
      jit_compile: Compile with XLA (identical results; tests/test_localize.py checks it).
      row_elements: Eager calls: (video, class) rows x interpolated positions x thresholds per compiled
        call; more rows run in several calls of one shape (memory and compiles stay bounded; the output
        does not depend on it).
    """

    def __init__(self, config: LocalizerConfig = LocalizerConfig(), *, jit_compile: bool = True,
                 name: str | None = None, row_elements: int = ROW_ELEMENTS):
        super().__init__(name=name)
        if not isinstance(config, LocalizerConfig):
            raise StpnError(f"Localizer: config must be a LocalizerConfig, got {type(config).__name__}")
        self.config = config
        self.jit_compile = bool(jit_compile)
        self.row_elements = int(row_elements)
        self._compiled = tf.function(self._run, jit_compile=self.jit_compile)
        # Eager calls: one function per component-slot bucket over (video, class) rows, and the
        # configured bounds with a class bucket Q' for the batches where a derived bound does not hold.
        self._rows: dict[int | None, tf.types.experimental.PolymorphicFunction] = {}
        self._bucketed: dict[int, tf.types.experimental.PolymorphicFunction] = {}
        self.fallbacks = 0  # eager batches that ran the configured bounds (a derived one did not hold)
        self._runtime: dict[LocalizerConfig, dict[str, tf.Tensor]] = {}

    def _runtime_tensors(self, settings: LocalizerConfig) -> dict[str, tf.Tensor]:
        """`runtime_tensors(settings)`, made once per settings (eager calls)."""
        if settings not in self._runtime:
            if len(self._runtime) > 256:
                self._runtime.clear()
            self._runtime[settings] = runtime_tensors(settings)
        return self._runtime[settings]

    def get_config(self) -> dict:
        return {**self.config.to_dict(), "jit_compile": self.jit_compile}

    @classmethod
    def from_config(cls, config: Mapping) -> "Localizer":
        settings = dict(config)
        jit_compile = settings.pop("jit_compile", True)
        return cls(LocalizerConfig.from_dict(settings), jit_compile=jit_compile)

    def _run(self, rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, settings):
        return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                        seconds_per_snippet=seconds_per_snippet, durations=durations, config=self.config,
                        settings=settings)

    def tracing_count(self) -> int:
        """How many times the functions were traced (compiled): one per structure, input shape and bucket."""
        return self._compiled.experimental_get_tracing_count() + sum(
            f.experimental_get_tracing_count() for f in (*self._rows.values(), *self._bucketed.values()))

    def _rows_function(self, slots: int | None):
        """The compiled function over (video, class) rows with `slots` component slots (None: M)."""
        if slots not in self._rows:
            config = self.config.replace(max_classes_per_video=None)
            m = config.max_components_per_class if slots is None else slots
            detections = min(config.max_detections, 2 * m)

            def run(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, runtime):
                return localize_with_bounds(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                            seconds_per_snippet=seconds_per_snippet, durations=durations,
                                            config=config, settings=runtime, component_slots=slots,
                                            detection_slots=detections, pad_outputs=False)

            self._rows[slots] = tf.function(run, jit_compile=self.jit_compile)
        return self._rows[slots]

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
        if classes not in self._bucketed:
            config = self.config.replace(max_classes_per_video=classes)

            def run(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, runtime):
                return localize(rgb, flow, lengths=lengths, num_snippets=num_snippets,
                                seconds_per_snippet=seconds_per_snippet, durations=durations, config=config,
                                settings=runtime)

            self._bucketed[classes] = tf.function(run, jit_compile=self.jit_compile)
        return self._bucketed[classes]

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
            # Rows run in chunks of at most `chunk` rows, so a call's buffers (rows x positions x thresholds)
            # stay under `row_elements` whatever the split's size, and large splits see one row shape (a
            # chunk) instead of one per row count.
            positions = rgb["tcam"].shape[1] * self.config.interpolation * len(self.config.thresholds)
            chunk = max(1, 2 ** int(np.floor(np.log2(max(1, self.row_elements // max(1, positions))))))
            padded = bucket(num_rows, 16, steps=4)
            if padded > chunk:
                padded = -(-num_rows // chunk) * chunk
            else:
                chunk = padded
            row_video = np.concatenate([video, np.zeros(padded - num_rows, video.dtype)])
            row_class = np.concatenate([klass, np.zeros(padded - num_rows, klass.dtype)])
            row_length = np.where(np.arange(padded) < num_rows, lengths[row_video], 0).astype(np.int32)
            rows = [{"attention": s["attention"][row_video],
                     "tcam": s["tcam"][row_video, :, row_class][:, :, np.newaxis],
                     "probabilities": s["probabilities"][row_video, row_class][:, np.newaxis]} for s in streams]
            needed = int(component_count_bound(*rows, row_length, settings).max(initial=0))
            slots = bucket(needed, 8)
            slots = slots if slots < self.config.max_components_per_class else None
            function, runtime = self._rows_function(slots), self._runtime_tensors(settings)
            parts = []
            for lo in range(0, padded, chunk):
                part = slice(lo, lo + chunk)
                pick = lambda x: tf.constant(x[row_video[part]])  # noqa: E731
                found, overflow, score64 = function(
                    *({k: v[part] for k, v in r.items()} for r in rows), tf.constant(row_length[part]),
                    pick(num_snippets), pick(seconds_per_snippet), None if durations is None else pick(durations),
                    runtime)
                if bool(overflow):
                    return None
                parts.append((found["num_detections"].numpy(), found["detection_scores"].numpy(),
                              found["detection_segments"].numpy(), score64.numpy()))
            count, scores32, segments, score64 = (np.concatenate(x) for x in zip(*parts))
            count = count[:num_rows]
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
                            f"structure {self.config.structure()} (interpolation, number of thresholds, NMS kind, "
                            "bounds); build a Localizer for them")
        if not tf.executing_eagerly():  # inside a graph (the export): the configured bounds
            rgb, flow = as_stream("rgb", rgb), as_stream("flow", flow)
            return self._compiled(rgb, flow, tf.convert_to_tensor(lengths, tf.int32),
                                  tf.convert_to_tensor(num_snippets, tf.int32),
                                  tf.convert_to_tensor(seconds_per_snippet, tf.float32),
                                  None if durations is None else tf.convert_to_tensor(durations, tf.float32),
                                  runtime_tensors(settings))
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
        durations = None if durations is None else _as_array(durations, np.float32)
        check_shapes(rgb, flow)
        check_lengths(lengths, rgb["tcam"].shape[1], caller="Localizer")
        outputs = self._localize_rows(rgb, flow, lengths, num_snippets, seconds_per_snippet, durations, settings)
        if outputs is None:
            self.fallbacks += 1
            tensors = lambda stream: {key: tf.constant(value) for key, value in stream.items()}  # noqa: E731
            outputs = self._class_bucket(rgb, flow, settings)(
                tensors(rgb), tensors(flow), tf.constant(lengths), tf.constant(num_snippets),
                tf.constant(seconds_per_snippet), None if durations is None else tf.constant(durations),
                self._runtime_tensors(settings))
            outputs = {key: value.numpy() for key, value in outputs.items()}
        return outputs

"""Running the composed graph over a dataset split, and the raw outputs it leaves for re-localization.

`predict_records` feeds a split's TFRecords to a ServingModel (an export, or the same graph built from a
training work directory) and returns the detections together with the raw outputs: attention, T-CAM and
video probabilities of each stream on the localized grid. Saved with `stpn_tf.artifacts.raw_outputs`, the
raw outputs let `localize_raw` run the Localizer again with other settings (`stpn localize --raw
--raw_engine=graph`, `--sweep`, the tuning) without rerunning the models; on the same settings it
reproduces the graph's detections exactly. (`stpn localize --raw` runs `stpn_tf.localize.numpy_engine` by
default, with the same bytes and without TensorFlow.)

Videos per call come from the data unless a batch size is given (`batch_size=0`, config.localize.batch_size
0): the models get as many records as fit `FEATURE_BYTES_PER_CALL` bytes of padded features
(`STREAM_FEATURE_BYTES_PER_CALL` in passes without the Localizer) and `POSITIONS_PER_CALL` grid positions
(`record_batches`); re-localizing raw outputs calls the Localizer on the videos where a class passes the class
threshold only (the others have no detections), `POSITIONS_PER_CALL` positions at a time
(`localize_batch_size`). Only speed and memory depend on the batching, never the detections on the grid; with
every snippet a call pads time to its longest video, and the models' float32 sums can then round differently
in the last bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from stpn_tf.data.grid import DEFAULT_GRID_LENGTH
from stpn_tf.data.records import reader
from stpn_tf.core.errors import StpnError
from stpn_tf.artifacts.results import results_envelope, results_from_padded
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.inference.runner import ServingModel
from stpn_tf.artifacts.raw_outputs import (RAW_STREAM_KEYS, check_raw_streams, check_single_stream_nms, passing_videos,
                                           raw_streams)
from stpn_tf.core.streams import stream_roles

# Videos per call at the paper's 400-position grid: the unit of the batch rules below.
VIDEOS_PER_CALL = 256
# Grid positions per call (256 videos x 400): the raw inputs of a Localizer call are then at most
# 2 streams x 102,400 x (C + 1) float32, 164 MB at ActivityNet's C = 200, and the models' outputs the same.
POSITIONS_PER_CALL = VIDEOS_PER_CALL * DEFAULT_GRID_LENGTH
# Serialized records per model call, padded to the longest of the call (features dominate a record: 8 D
# bytes per snippet). 256 MB: 32 two-hour videos of D = 128, or 16 of THUMOS14's longest (~4,000 snippets)
# at I3D's D = 1024. Such a call also localizes its videos, and fewer, larger Localizer calls compile fewer
# shapes.
FEATURE_BYTES_PER_CALL = 2 ** 28
# The same for a pass that only runs the stream models (no Localizer: `stpn tune`, `stpn study`). A call
# holds several copies of its features (records, parsed, padded, the models' products), so this bounds the
# pass's memory: 32 MB is 4 two-hour videos of D = 128, or one of THUMOS14's longest at D = 1024. `stpn tune`
# on 200 + 210 THUMOS14-length videos of D = 1024 peaked at 3.2 GB with 256 MB calls and 2.4 GB with these,
# in the same time and with the same output.
STREAM_FEATURE_BYTES_PER_CALL = 2 ** 25


def batch_size_for(raw: Mapping[str, np.ndarray], videos: int = VIDEOS_PER_CALL) -> int:
    """Videos per Localizer call for `raw`: `videos` at the paper's 400-position grid, fewer when the raw
    outputs are longer (all-snippet outputs are padded to the longest video), so a call holds about as
    many positions either way (`localize_batch_size` of that many positions, at most `videos`). Only speed
    and memory depend on it, never the scores."""
    return min(videos, localize_batch_size(raw, videos * DEFAULT_GRID_LENGTH))


def localize_batch_size(raw: Mapping[str, np.ndarray], positions_per_call: int = POSITIONS_PER_CALL) -> int:
    """Videos per Localizer call when re-localizing `raw` (`localize_raw` with batch_size=0): as many as
    hold `positions_per_call` grid positions (1,024 videos of ActivityNet's 100 positions, 256 at 400), so
    the (video, class) rows of a call fill the Localizer's fixed row chunks (one compile) while a call's
    inputs stay bounded (see POSITIONS_PER_CALL)."""
    positions = int(np.asarray(raw[f"{raw_streams(raw)[0]}/attention"]).shape[1])
    return max(1, positions_per_call // max(1, positions))


def record_batches(records: Iterator[bytes], *, max_videos: int, max_bytes: int = FEATURE_BYTES_PER_CALL,
                   ) -> Iterator[list[bytes]]:
    """Consecutive serialized records grouped in order into calls of the models (`predict_records` with
    batch_size=0).

    A call takes records while it holds at most `max_videos` of them and (records) x (the longest one's
    size) <= `max_bytes`, the size of its padded feature batch; a single record larger than that is a call
    of its own.
    """
    batch: list[bytes] = []
    longest = 0
    for record in records:
        size = max(longest, len(record))
        if batch and (len(batch) >= max_videos or (len(batch) + 1) * size > max_bytes):
            yield batch
            batch, size = [], len(record)
        batch.append(record)
        longest = size
    if batch:
        yield batch


def predict_records(model: ServingModel, shards: Sequence[str], *, batch_size: int = 0, progress=None,
                    keep_raw: bool = True, sink: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None,
                    detections: bool = True) -> tuple[dict[str, Any] | None, dict[str, np.ndarray] | None]:
    """Runs every video of `shards` through the model's `serve_examples` signature.

    Args:
      model: The composed graph (stpn_tf.inference.runner.load_serving_model).
      shards: TFRecord files of the project's schema.
      batch_size: Videos per call; 0: from the data (`record_batches`: at most `FEATURE_BYTES_PER_CALL` bytes
        of padded records, `STREAM_FEATURE_BYTES_PER_CALL` when the call runs the stream models alone, and
        `POSITIONS_PER_CALL` grid positions per call).
      progress: Optional callable(videos done) for progress output.
      keep_raw: Also collect the raw outputs (they grow with the split: about 2 T C floats per video, 3 GB for
        ActivityNet's 4,926 validation videos at T = 400, C = 200); False returns None for them.
      sink: Called with each batch's {video_id: detections} as they come (e.g.
        stpn_tf.artifacts.results.ResultsWriter.add), instead of collecting them; with keep_raw=False
        memory then stays flat in the number of videos.
      detections: False: the raw outputs only (results None; in process the Localizer does not run), for
        callers that localize the raw outputs themselves (`stpn tune`).

    Returns:
      (results object in the ActivityNet layout, or None with a `sink`; raw outputs). Raw outputs are
      numpy arrays padded along
      time to the longest grid: "video_id" [N] str, "length" [N] valid grid positions, "num_snippets",
      "seconds_per_snippet", "duration" [N], "classes" [C], and per stream s: "s/attention" [N, T],
      "s/tcam" [N, T, C], "s/probabilities" [N, C].
    """
    results: dict[str, list[dict[str, Any]]] = {}
    parts: dict[str, list[np.ndarray]] = {}
    done = 0

    def run(batch: tf.Tensor):
        nonlocal done
        out = model.call_examples(batch) if detections else model.call_streams(batch)
        video_ids = [v.decode() for v in out["video_id"]]
        if not detections:
            done += len(video_ids)
        elif sink is None:
            results.update(results_from_padded(video_ids, model.classes, out))
            done = len(results)
        else:
            sink(results_from_padded(video_ids, model.classes, out))
            done += len(video_ids)
        if progress is not None:
            progress(done)
        if not keep_raw:
            return
        add = lambda key, value: parts.setdefault(key, []).append(np.asarray(value))  # noqa: E731
        add("video_id", video_ids)
        add("length", out["grid_length"])
        for key in ("num_snippets", "seconds_per_snippet", "duration"):
            add(key, out[key])
        for i, stream in enumerate(model.streams):
            add(f"{stream}/attention", out["attention"][:, i])
            add(f"{stream}/tcam", out["tcam"][:, i])
            add(f"{stream}/probabilities", out["video_probabilities"][:, i])

    missing = [path for path in shards if not tf.io.gfile.exists(path)]
    if missing:
        raise StpnError(f"{missing[0]}: TFRecord file not found")
    try:
        # The shards interleaved one record at a time, in a fixed order (the order of the results), and
        # batched as string tensors that go to the model as they are.
        with reader.corrupt_record_errors(shards):
            if batch_size:
                for batch in reader.tfrecord_dataset(shards).batch(batch_size):
                    run(batch)
            else:
                # On the paper's grid a video is 400 positions; on every snippet about its record's size
                # in snippets at most (8 D bytes each), which `max_bytes` bounds as well.
                videos = POSITIONS_PER_CALL // (model.grid_length or DEFAULT_GRID_LENGTH)
                streams_alone = not detections and model.runs_streams_alone
                for batch in record_batches(reader.tfrecord_dataset(shards).as_numpy_iterator(),
                                            max_videos=max(1, videos),
                                            max_bytes=min(STREAM_FEATURE_BYTES_PER_CALL if streams_alone
                                                          else FEATURE_BYTES_PER_CALL,
                                                          POSITIONS_PER_CALL * 8 * model.feature_dim)):
                    run(tf.constant(batch, tf.string))
    except tf.errors.InvalidArgumentError as error:  # the parser's checks (stpn_tf.data.records.decoder)
        raise StpnError(f"{shards[0] if len(shards) == 1 else ', '.join(shards)}: a record does not fit the "
                        f"model ({reader.one_line(error.message)})") from None
    if not done:
        raise StpnError(f"no videos in {', '.join(shards)}")
    raw = _concatenate(parts, model.classes) if keep_raw else None
    return (results_envelope(results) if sink is None and detections else None), raw


def _concatenate(parts: dict[str, list[np.ndarray]], classes: Sequence[str]) -> dict[str, np.ndarray]:
    max_t = max(a.shape[1] for key, chunks in parts.items() if key.endswith("/attention") for a in chunks)
    raw = {}
    for key in list(parts):
        chunks = parts[key]
        if key.endswith(("/attention", "/tcam")):  # padded into one array (no padded copy of every chunk)
            out = np.zeros((sum(len(c) for c in chunks), max_t, *chunks[0].shape[2:]), chunks[0].dtype)
            start = 0
            for c in chunks:
                out[start:start + len(c), :c.shape[1]] = c
                start += len(c)
            raw[key] = out
        else:
            raw[key] = np.concatenate(chunks)
        del parts[key]  # the chunks are freed as soon as their array is built
    raw["classes"] = np.asarray(list(classes))
    return raw


def raw_batches(raw: Mapping[str, np.ndarray], *, streams: Sequence[str] = ("rgb", "flow"),
                batch_size: int = 16, videos: np.ndarray | None = None,
                ) -> list[tuple[list[str], dict[str, Any]]]:
    """Saved raw outputs as Localizer inputs: [(video ids, keyword arguments of one Localizer call)].

    The last batch is padded to `batch_size` videos so every call has one shape (one compile).

    Args:
      raw, streams: As in `localize_raw`.
      batch_size: Videos per call; 0: `localize_batch_size(raw)`, or as many as there are if fewer.
      videos: Indices of the videos to take, in this order (default all).
    """
    return list(_iter_raw_batches(raw, streams=streams, batch_size=batch_size, videos=videos))


def _iter_raw_batches(raw: Mapping[str, np.ndarray], *, streams: Sequence[str], batch_size: int,
                      videos: np.ndarray | None) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """`raw_batches` one batch at a time (a batch's copies are freed once it is localized)."""
    check_raw_streams(raw, streams)
    first, second = stream_roles(streams)
    videos = np.arange(len(raw["video_id"])) if videos is None else np.asarray(videos, np.int64)
    # From the data: no more than the videos there are (a split that fits one call is not padded).
    batch_size = batch_size or min(localize_batch_size(raw), max(1, len(videos)))
    for lo in range(0, len(videos), batch_size):
        index = videos[lo:lo + batch_size]

        def take(key, dtype):  # numpy: the eager Localizer takes and returns arrays
            value = np.asarray(raw[key])
            out = np.zeros((batch_size, *value.shape[1:]), dtype)  # zero videos pass no class: no work
            out[:len(index)] = value[index]
            return out

        def stream(s):
            return {k: take(f"{s}/{k}", np.float32) for k in RAW_STREAM_KEYS}

        yield ([str(v) for v in raw["video_id"][index]], dict(
            rgb=stream(first), flow=stream(second), lengths=take("length", np.int32),
            num_snippets=take("num_snippets", np.int32), seconds_per_snippet=take("seconds_per_snippet", np.float32),
            durations=take("duration", np.float32)))


def localize_raw(raw: Mapping[str, np.ndarray], localizer: Localizer, *, streams: Sequence[str] = ("rgb", "flow"),
                 batch_size: int = 0, settings: LocalizerConfig | None = None,
                 batches: Sequence[tuple[list[str], dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Localizes every video of saved raw outputs with `localizer`; ActivityNet results object.

    Work scales with the (video, class) pairs that pass the class threshold: videos where no class passes
    have no detections and are not localized (unless `batches` are given), and the Localizer turns the
    pairs into rows (stpn_tf.localize.localizer).

    Args:
      raw: Raw outputs (see `predict_records`).
      localizer: The postprocessor and its settings.
      streams: ("rgb", "flow") for two-stream localization, or one stream alone ("rgb", "flow" or "joint";
        it then plays both roles of eq. 7, which is the single-stream score).
      batch_size: Videos per call; 0: `localize_batch_size(raw)`. The last batch is padded so every call
        has one shape (one compile).
      settings: Runtime settings for this call (Localizer.__call__); None: the localizer's own.
      batches: `raw_batches(raw, streams=streams, ...)` already built (a sweep builds them once).

    Returns:
      The results object, its videos in the order of `raw`.
    """
    config = settings or localizer.config
    check_single_stream_nms(streams, nms=config.nms, nms_threshold=config.nms_threshold)
    classes = [str(c) for c in raw["classes"]]
    results: dict[str, list[dict[str, Any]]] = {str(v): [] for v in raw["video_id"]}  # the order of `raw`
    if batches is None:
        check_raw_streams(raw, streams)
        videos = passing_videos(raw, streams=streams, class_threshold=config.class_threshold)
        batches = _iter_raw_batches(raw, streams=streams, batch_size=batch_size, videos=videos)
    for video_ids, out in localized_batches(raw, localizer, streams=streams, batch_size=batch_size,
                                            settings=settings, batches=batches):
        results.update(results_from_padded(video_ids, classes, out))
    return results_envelope(results)


def localized_batches(raw: Mapping[str, np.ndarray], localizer: Localizer, *,
                      streams: Sequence[str] = ("rgb", "flow"), batch_size: int = 0,
                      settings: LocalizerConfig | None = None,
                      batches: Sequence[tuple[list[str], dict[str, Any]]] | None = None,
                      ) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """The Localizer over saved raw outputs, one batch at a time: the loop of `localize_raw` and of the
    sweeps (stpn_tf.tuning.sweep), which keep the padded outputs as arrays.

    Args:
      raw, localizer, streams, batch_size, settings, batches: As in `localize_raw`.

    Yields:
      (the batch's N video ids, the Localizer's outputs as numpy arrays padded to `batch_size` videos:
      "detection_classes" [B, K], "detection_scores" [B, K], "detection_segments" [B, K, 2],
      "num_detections" [B]).
    """
    for video_ids, inputs in (batches if batches is not None else _iter_raw_batches(
            raw, streams=streams, batch_size=batch_size, videos=None)):
        yield video_ids, localizer(**inputs, settings=settings)

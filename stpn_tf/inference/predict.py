"""Running the composed graph over a dataset split, and the raw outputs it leaves for re-localization.

`predict_records` feeds a split's TFRecords to a ServingModel (an export, or the same graph built from a
training work directory) and returns the detections together with the raw outputs: attention, T-CAM and
video probabilities of each stream on the localized grid. Saved with `save_raw`, the raw outputs let
`localize_raw` run the Localizer again with other settings (`stpn localize --raw`, `--sweep`) without
rerunning the models; on the same settings it reproduces the graph's detections exactly.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from stpn_tf.data.records import reader
from stpn_tf.core.errors import StpnError
from stpn_tf.core.atomic import atomic_write_bytes
from stpn_tf.artifacts.results import results_envelope, results_from_padded
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.inference.runner import ServingModel
from stpn_tf.inference.module import stream_roles

RAW_STREAM_KEYS = ("attention", "tcam", "probabilities")


def predict_records(model: ServingModel, shards: Sequence[str], *, batch_size: int = 16, progress=None,
                    keep_raw: bool = True, sink: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None,
                    ) -> tuple[dict[str, Any] | None, dict[str, np.ndarray] | None]:
    """Runs every video of `shards` through the model's `serve_examples` signature.

    Args:
      model: The composed graph (stpn_tf.inference.runner.load_serving_model).
      shards: TFRecord files of the project's schema.
      batch_size: Videos per call.
      progress: Optional callable(videos done) for progress output.
      keep_raw: Also collect the raw outputs (they grow with the split: about 2 T C floats per video, 3 GB for
        ActivityNet's 4,926 validation videos at T = 400, C = 200); False returns None for them.
      sink: Called with each batch's {video_id: detections} as they come (e.g.
        stpn_tf.artifacts.results.ResultsWriter.add), instead of collecting them; with keep_raw=False
        memory then stays flat in the number of videos.

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
        out = model.call_examples(batch)
        video_ids = [v.decode() for v in out["video_id"]]
        detections = results_from_padded(video_ids, model.classes, out)
        if sink is None:
            results.update(detections)
            done = len(results)
        else:
            sink(detections)
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
            for batch in reader.tfrecord_dataset(shards).batch(batch_size):
                run(batch)
    except tf.errors.InvalidArgumentError as error:  # the parser's checks (stpn_tf.data.records.decoder)
        raise StpnError(f"{shards[0] if len(shards) == 1 else ', '.join(shards)}: a record does not fit the "
                        f"model ({reader.one_line(error.message)})") from None
    if not done:
        raise StpnError(f"no videos in {', '.join(shards)}")
    raw = _concatenate(parts, model.classes) if keep_raw else None
    return (results_envelope(results) if sink is None else None), raw


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


def raw_streams(raw: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The streams whose outputs `raw` holds, in rgb, flow, joint order."""
    return tuple(s for s in ("rgb", "flow", "joint") if f"{s}/attention" in raw)


def save_raw(path: str, raw: Mapping[str, np.ndarray], *, split: str | None = None,
             ground_truth: str | None = None) -> None:
    """Writes raw outputs as an uncompressed `.npz` atomically (no pickle: strings are unicode arrays).

    Args:
      split: The split the outputs are of, recorded as "split" (the default subset of a sweep over them).
      ground_truth: Its ground truth file, recorded as "ground_truth" (relative to the file's directory when
        it lies inside it, so a work directory can be moved with its dataset).
    """
    raw = dict(raw)
    if split is not None:
        raw["split"] = np.asarray(str(split))
    if ground_truth is not None:
        base = os.path.dirname(os.path.abspath(path))
        inside = os.path.abspath(ground_truth).startswith(base + os.sep)
        raw["ground_truth"] = np.asarray(os.path.relpath(ground_truth, base) if inside
                                         else os.path.abspath(ground_truth))
    buffer = io.BytesIO()
    np.savez(buffer, **{k.replace("/", "__"): np.asarray(v) for k, v in raw.items()})
    atomic_write_bytes(path, buffer.getvalue(), make_parents=True)


def raw_source(raw: Mapping[str, np.ndarray], path: str) -> tuple[str | None, str | None]:
    """(split, ground truth file) recorded in raw outputs read from `path`; None for what is not recorded."""
    split = str(raw["split"]) if "split" in raw else None
    ground_truth = str(raw["ground_truth"]) if "ground_truth" in raw else None
    if ground_truth is not None and not os.path.isabs(ground_truth):
        ground_truth = os.path.join(os.path.dirname(os.path.abspath(path)), ground_truth)
    return split, ground_truth


def load_raw(path: str) -> dict[str, np.ndarray]:
    """Reads raw outputs written by `save_raw`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k.replace("__", "/"): data[k] for k in data.files}
    except FileNotFoundError:
        raise StpnError(f"{path}: raw outputs not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise StpnError(f"{path}: not a raw-outputs file written by `stpn localize --save_raw` ({e})") from None
    missing = [k for k in ("video_id", "length", "num_snippets", "seconds_per_snippet", "duration", "classes")
               if k not in raw]
    if missing or not raw_streams(raw):
        raise StpnError(f"{path}: not a raw-outputs file written by `stpn localize --save_raw` (missing "
                        f"{', '.join(missing) or 'stream outputs'})")
    return raw


def raw_batches(raw: Mapping[str, np.ndarray], *, streams: Sequence[str] = ("rgb", "flow"),
                batch_size: int = 16) -> list[tuple[list[str], dict[str, Any]]]:
    """Saved raw outputs as Localizer inputs: [(video ids, keyword arguments of one Localizer call)].

    The last batch is padded to `batch_size` videos so every call has one shape (one compile).
    """
    first, second = stream_roles(streams)
    for stream in {first, second}:
        if f"{stream}/attention" not in raw:
            raise StpnError(f"the raw outputs hold no {stream} stream (they have {', '.join(raw_streams(raw))})")
    batches = []
    n = len(raw["video_id"])
    for lo in range(0, n, batch_size):
        sl = slice(lo, min(n, lo + batch_size))
        pad = batch_size - (sl.stop - sl.start)

        def take(key, dtype):  # numpy: the eager Localizer takes and returns arrays
            value = raw[key][sl]
            return np.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1)).astype(dtype)

        def stream(s):
            return {k: take(f"{s}/{k}", np.float32) for k in RAW_STREAM_KEYS}

        batches.append(([str(v) for v in raw["video_id"][sl]], dict(
            rgb=stream(first), flow=stream(second), lengths=take("length", np.int32),
            num_snippets=take("num_snippets", np.int32), seconds_per_snippet=take("seconds_per_snippet", np.float32),
            durations=take("duration", np.float32))))
    return batches


def localize_raw(raw: Mapping[str, np.ndarray], localizer: Localizer, *, streams: Sequence[str] = ("rgb", "flow"),
                 batch_size: int = 16, settings: LocalizerConfig | None = None,
                 batches: Sequence[tuple[list[str], dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Localizes every video of saved raw outputs with `localizer`; ActivityNet results object.

    Args:
      raw: Raw outputs (see `predict_records`).
      localizer: The postprocessor and its settings.
      streams: ("rgb", "flow") for two-stream localization, or one stream alone ("rgb", "flow" or "joint";
        it then plays both roles of eq. 7, which is the single-stream score).
      batch_size: Videos per call; the last batch is padded so every call has one shape (one compile).
      settings: Runtime settings for this call (Localizer.__call__); None: the localizer's own.
      batches: `raw_batches(raw, streams=streams, ...)` already built (a sweep builds them once).
    """
    first, second = stream_roles(streams)
    nms_threshold = (settings or localizer.config).nms_threshold
    if first == second and nms_threshold >= 1.0 and (settings or localizer.config).nms == "hard":
        # One stream plays both roles of eq. 7; NMS (tIoU 1 > threshold) is what removes its duplicates.
        raise StpnError("single-stream localization needs nms_threshold < 1")
    classes = [str(c) for c in raw["classes"]]
    results: dict[str, list[dict[str, Any]]] = {}
    for video_ids, out in localized_batches(raw, localizer, streams=streams, batch_size=batch_size,
                                            settings=settings, batches=batches):
        results.update(results_from_padded(video_ids, classes, out))
    return results_envelope(results)


def localized_batches(raw: Mapping[str, np.ndarray], localizer: Localizer, *,
                      streams: Sequence[str] = ("rgb", "flow"), batch_size: int = 16,
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
    for video_ids, inputs in (batches if batches is not None else raw_batches(raw, streams=streams,
                                                                               batch_size=batch_size)):
        yield video_ids, localizer(**inputs, settings=settings)

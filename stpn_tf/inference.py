"""Running trained streams over a dataset split, saving raw outputs, and turning them into detections.

Raw outputs (attention, T-CAM, video probabilities per stream) are kept apart from localization so that
thresholds can be swept without rerunning the models (`stpn localize --sweep`).
"""

from __future__ import annotations

import functools
import io
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from stpn_tf import localize as localize_lib
from stpn_tf.data import pipeline, tfrecord
from stpn_tf.data.annotations import atomic_write_text
from stpn_tf.errors import StpnError
from stpn_tf.model.stpn import STREAMS, load_classes, load_stream_model

RESULTS_VERSION = "VERSION 1.3"
LOCALIZE_KEYS = ("class_threshold", "tcam_threshold", "alpha", "interpolation", "nms_threshold", "max_detections",
                 "max_components_per_class", "max_classes_per_video")


def localize_params(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of `stpn_tf.localize.localize` from a config's `localize` section (0 classes = all)."""
    params = {k: settings[k] for k in LOCALIZE_KEYS}
    params["max_classes_per_video"] = params["max_classes_per_video"] or None
    return params


def predict(
    workdir: str,
    shards: Sequence[str],
    *,
    feature_dim: int,
    grid_size: int | None = 400,
    batch_size: int = 16,
    streams: Sequence[str] = STREAMS,
) -> dict[str, np.ndarray]:
    """Runs the trained stream models of `workdir` over every video of `shards`.

    Args:
        grid_size: test grid size (400 in the paper), or None to run on every real snippet.

    Returns:
        Raw outputs, all numpy, padded along time to the longest grid: "video_id" `[N]` str,
        "length" `[N]` valid grid positions, "num_snippets" `[N]`, "seconds_per_snippet" `[N]`,
        "duration" `[N]`, and per stream s: "s/attention" `[N, T]`, "s/tcam" `[N, T, C]`,
        "s/probabilities" `[N, C]`.
    """
    classes = load_classes(workdir)
    models = {s: load_stream_model(workdir, s) for s in streams}
    for s, model in models.items():
        expected = feature_dim * (2 if s == "joint" else 1)
        if model.classifier.kernel.shape[0] != expected:
            raise StpnError(f"{workdir}: the {s} model reads {model.classifier.kernel.shape[0]}-d features but the "
                            f"dataset has {expected}: the dataset is not the one the model was trained on")
    dataset = pipeline.make_eval_dataset(
        shards, num_classes=len(classes), feature_dim=feature_dim, num_snippets=grid_size, batch_size=batch_size
    )
    run = {s: tf.function(lambda x, m=m: m(x, training=False), reduce_retracing=True) for s, m in models.items()}
    parts: dict[str, list[np.ndarray]] = {}

    def add(key, value):
        parts.setdefault(key, []).append(np.asarray(value))

    with tfrecord.corrupt_record_errors(shards):
        for batch in dataset:
            for key in ("length", "num_snippets", "seconds_per_snippet", "duration"):
                add(key, batch[key])
            add("video_id", [v.decode() for v in batch["video_id"].numpy()])
            for s in streams:
                out = run[s]({"features": pipeline.stream_features(batch, s), "mask": batch["mask"]})
                add(f"{s}/attention", out["attention"])
                add(f"{s}/tcam", out["tcam"])
                add(f"{s}/probabilities", tf.sigmoid(out["video_logits"]))
    if not parts:
        raise StpnError(f"no videos in {', '.join(shards)}")
    max_t = max(a.shape[1] for a in parts[f"{streams[0]}/attention"])
    raw = {}
    for key, chunks in parts.items():
        if key.endswith(("/attention", "/tcam")):
            chunks = [np.pad(c, [(0, 0), (0, max_t - c.shape[1])] + [(0, 0)] * (c.ndim - 2)) for c in chunks]
        raw[key] = np.concatenate(chunks)
    raw["classes"] = np.asarray(classes)
    return raw


def save_raw(path: str, raw: Mapping[str, np.ndarray]) -> None:
    """Writes raw outputs as an uncompressed `.npz` (no pickle: strings are stored as unicode arrays)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k.replace("/", "__"): np.asarray(v) for k, v in raw.items()})
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def load_raw(path: str) -> dict[str, np.ndarray]:
    """Reads raw outputs written by `save_raw`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k.replace("__", "/"): data[k] for k in data.files}
    except FileNotFoundError:
        raise StpnError(f"{path}: raw outputs not found") from None
    except (ValueError, OSError) as e:
        raise StpnError(f"{path}: not a raw-outputs file written by `stpn localize --save_raw` ({e})") from None


def localize_raw(
    raw: Mapping[str, np.ndarray],
    *,
    streams: Sequence[str] = STREAMS,
    batch_size: int = 16,
    jit_compile: bool = True,
    **params: Any,
) -> dict[str, Any]:
    """Localizes every video of `raw` and returns an ActivityNet-format results dict.

    Args:
        streams: ("rgb", "flow") for two-stream localization, or one stream alone ("rgb", "flow" or the joint
            model "joint"; it then plays both roles of eq. 7, which is the single-stream score).
        params: localization keywords of `stpn_tf.localize.localize` (thresholds, alpha, interpolation, ...).
    """
    classes = [str(c) for c in raw["classes"]]
    if tuple(sorted(streams)) not in (("flow", "rgb"), ("rgb",), ("flow",), ("joint",)):
        raise StpnError(f"streams must be rgb,flow or one of rgb, flow, joint; got {','.join(streams)}")
    if len(streams) == 1 and params.get("nms_threshold", 0.5) >= 1.0:
        # One stream plays both roles of eq. 7; NMS (tIoU 1 > threshold) is what removes its duplicates.
        raise StpnError("single-stream localization needs nms_threshold < 1")
    # Roles by name: eq. 7 weighs the RGB T-CAM by alpha. One stream alone fills both roles, which gives
    # lambda_s * a_s, the single-stream score.
    first, second = ("rgb", "flow") if len(streams) == 2 else (streams[0], streams[0])
    fn = _compiled_localize(jit_compile)
    results: dict[str, list[dict[str, Any]]] = {}
    n = len(raw["video_id"])
    for lo in range(0, n, batch_size):
        sl = slice(lo, min(n, lo + batch_size))
        # Pad the last batch to the full size so every call has the same shapes (one XLA compilation).
        pad = batch_size - (sl.stop - sl.start)

        def take(key, dtype):
            value = raw[key][sl]
            return tf.constant(np.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1)), dtype)

        def stream(s):
            return {k: take(f"{s}/{k}", tf.float32) for k in ("attention", "tcam", "probabilities")}

        out = fn(
            stream(first), stream(second),
            lengths=take("length", tf.int32), num_snippets=take("num_snippets", tf.int32),
            seconds_per_snippet=take("seconds_per_snippet", tf.float32), durations=take("duration", tf.float32),
            **params,
        )
        out = {k: v.numpy() for k, v in out.items()}
        results.update(_results_json(raw["video_id"][sl], classes, out))
    return _wrap(results)


@functools.lru_cache(maxsize=2)
def _compiled_localize(jit_compile: bool):
    return tf.function(localize_lib.localize, jit_compile=jit_compile)


def _results_json(video_ids, classes, out) -> dict[str, Any]:
    """ActivityNet results dict from padded detections (`num_detections` valid entries per video)."""
    results: dict[str, list[dict[str, Any]]] = {}
    for i, video_id in enumerate(video_ids):
        results[str(video_id)] = [
            {
                "label": classes[int(out["detection_classes"][i, j])],
                "score": float(out["detection_scores"][i, j]),
                "segment": [float(out["detection_segments"][i, j, 0]), float(out["detection_segments"][i, j, 1])],
            }
            for j in range(int(out["num_detections"][i]))
        ]
    return results


def _wrap(results: dict[str, Any]) -> dict[str, Any]:
    return {"version": RESULTS_VERSION, "results": results,
            "external_data": {"used": True, "details": "I3D features pretrained on Kinetics"}}


def is_export_dir(path: str) -> bool:
    """True for a SavedModel directory written by `stpn export`."""
    return os.path.exists(os.path.join(path, "saved_model.pb"))


def localize_with_export(export_dir: str, shards: Sequence[str], *, batch_size: int = 16) -> dict[str, Any]:
    """Runs an export's `serve_examples` signature over TFRecord shards; ActivityNet results dict."""
    model = tf.saved_model.load(export_dir)
    serve = model.signatures["serve_examples"]
    results: dict[str, Any] = {}
    batch: list[bytes] = []

    def flush():
        out = {k: v.numpy() for k, v in serve(examples=tf.constant(batch)).items()}
        classes = [c.decode() for c in out["class_names"]]
        results.update(_results_json([v.decode() for v in out["video_id"]], classes, out))
        batch.clear()

    for record in tfrecord.read_records(shards):
        batch.append(record)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not results:
        raise StpnError(f"no videos in {', '.join(shards)}")
    return _wrap(results)


def write_results(results: Mapping[str, Any], path: str) -> None:
    """Writes an ActivityNet-format detections JSON atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(results))
    logging.info("wrote %d videos' detections to %s", len(results["results"]), path)

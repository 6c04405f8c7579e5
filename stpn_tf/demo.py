"""`stpn demo`: the whole system end to end on the embedded synthetic THUMOS14-shaped dataset."""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from absl import logging

from stpn_tf import evaluate as evaluate_lib
from stpn_tf import inference
from stpn_tf import train as train_lib
from stpn_tf.data import annotations, tfrecord
from stpn_tf.data import synthetic as synthetic_lib
from stpn_tf.errors import StpnError
from stpn_tf.model.stpn import stream_model_path

ROWS = (("RGB", ("rgb",)), ("flow", ("flow",)), ("two-stream", ("rgb", "flow")))


def format_rows(protocol: str, thresholds, rows: list[tuple[str, dict]]) -> str:
    """A mAP table (percent) with one row per stream setting and the average in the last column."""
    head = f"{protocol:<24}" + "".join(f"{t:>6.2f}" for t in thresholds) + "    avg"
    lines = [head, "-" * len(head)]
    for name, result in rows:
        lines.append(f"{name:<24}" + "".join(f"{100 * m:>6.1f}" for m in result["mAP"])
                     + f"{100 * result['average_mAP']:>7.1f}")
    return "\n".join(lines)


def run_demo(
    *,
    workdir: str,
    synthetic: Mapping[str, Any],
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    localize: Mapping[str, Any],
    evaluate: Mapping[str, Any],
) -> dict[str, dict[str, dict]]:
    """Generates data, trains both streams, localizes the test split and prints the mAP tables.

    Everything is written below `workdir`: `dataset/` (TFRecords), `rgb/` and `flow/` (models, logs,
    checkpoints), `raw_test.npz`, `detections_<row>.json`, `results.json`.

    Returns:
        {protocol: {row name: evaluation result}}.
    """
    start = time.time()
    dataset_dir = os.path.join(workdir, "dataset")
    if os.path.exists(os.path.join(dataset_dir, tfrecord.METADATA_FILE)):
        made = tfrecord.read_dataset_metadata(dataset_dir)
        wanted = {"feature_dim": synthetic["feature_dim"], "seed": synthetic["seed"],
                  "max_snippets": synthetic["max_snippets"]}
        have = {"feature_dim": made["feature_dim"], **made.get("synthetic", {})}
        if any(have.get(k) != v for k, v in wanted.items()):
            raise StpnError(f"{dataset_dir}: made with other synthetic settings ({have}) than asked ({wanted}); "
                            "use a new --workdir")
        print(f"[demo] reusing dataset in {dataset_dir}")
    else:
        print(f"[demo] writing the synthetic THUMOS14 dataset to {dataset_dir}")
        synthetic_lib.write_dataset(
            dataset_dir, feature_dim=synthetic["feature_dim"], seed=synthetic["seed"],
            max_snippets=synthetic["max_snippets"], num_shards=synthetic["num_shards"],
        )
    for stream in ("rgb", "flow"):
        if os.path.exists(stream_model_path(workdir, stream)):
            print(f"[demo] reusing the trained {stream} model in {workdir} (new training settings need a new --workdir)")
            continue
        print(f"[demo] training the {stream} stream ({train['steps']} steps)")
        train_lib.run_train(dataset_dir=dataset_dir, workdir=workdir, stream=stream, **model, **train,
                                  verbose=2)
    meta = tfrecord.read_dataset_metadata(dataset_dir)
    print("[demo] localizing the test split")
    raw = inference.predict(
        workdir, tfrecord.list_shards(dataset_dir, "test"), feature_dim=meta["feature_dim"],
        grid_size=None if localize["all_snippets"] else localize["num_snippets"], batch_size=localize["batch_size"],
    )
    inference.save_raw(os.path.join(workdir, "raw_test.npz"), raw)
    ground_truth = annotations.read_activitynet_json(
        os.path.join(dataset_dir, tfrecord.GROUND_TRUTH_FILE), subset="test")
    thresholds = list(evaluate["tiou_thresholds"])
    protocols = ("activitynet", "th14kit") if evaluate["protocol"] == "both" else (evaluate["protocol"],)
    tables: dict[str, dict[str, dict]] = {p: {} for p in protocols}
    for name, streams in ROWS:
        results = inference.localize_raw(raw, streams=streams, **inference.localize_params(localize))
        inference.write_results(results, os.path.join(workdir, f"detections_{'_'.join(streams)}.json"))
        for protocol in protocols:
            tables[protocol][name] = evaluate_lib.evaluate_detections(
                ground_truth, results, protocol=protocol, tiou_thresholds=thresholds)
    print()
    for protocol in protocols:
        title = {"activitynet": "ActivityNet protocol", "th14kit": "THUMOS14 toolkit"}[protocol]
        print(format_rows(f"mAP (%) {title}", thresholds, list(tables[protocol].items())))
        print()
    print(f"[demo] done in {time.time() - start:.0f} s; outputs in {workdir}")
    logging.info("demo finished")
    return tables

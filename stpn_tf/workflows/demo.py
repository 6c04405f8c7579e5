"""`stpn demo`: the whole system end to end on the embedded synthetic THUMOS14-shaped dataset.

    synthetic dataset -> train the RGB and flow streams -> the composed graph over the test split
    (two-stream detections + raw outputs) -> each stream alone from the raw outputs -> both protocols

Everything is written below the work directory: `dataset/` (TFRecords), `rgb/` and `flow/` (models, logs,
checkpoints), `raw_test.npz`, `detections_<streams>.json`, `results.txt` / `results.json` (the tables).
The work directory records its dataset and config, so `stpn localize --workdir=W` and `stpn export
--workdir=W` need no other flag afterwards.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from stpn_tf.artifacts import raw_outputs
from stpn_tf.inference import predict
from stpn_tf.training import trainer as train_lib
from stpn_tf.data import synthetic as synthetic_lib
from stpn_tf.data.grid import GridConfig
from stpn_tf.core.errors import StpnError
from stpn_tf.evaluation import evaluate_detections, protocols_of
from stpn_tf.core.tables import format_protocol_tables
from stpn_tf.artifacts import dataset_dir as dataset_io
from stpn_tf.core.atomic import atomic_write_json, atomic_write_text
from stpn_tf.artifacts.ground_truth import load_ground_truth
from stpn_tf.artifacts.results import write_results
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.workflows import runs
from stpn_tf.model.stpn import ModelConfig
from stpn_tf.localize import Localizer, LocalizerConfig
from stpn_tf.inference.runner import load_serving_model

ROWS = (("RGB", ("rgb",)), ("flow", ("flow",)), ("two-stream", ("rgb", "flow")))


def run_demo(
    *,
    workdir: str,
    synthetic: synthetic_lib.SyntheticConfig = synthetic_lib.SyntheticConfig(),
    model: ModelConfig = ModelConfig(),
    train: train_lib.TrainConfig = train_lib.TrainConfig(),
    grid: GridConfig = GridConfig(),
    localizer_config: LocalizerConfig = LocalizerConfig(),
    batch_size: int = 16,
    protocol: str = "both",
    tiou_thresholds: Sequence[float] = (),
    config_record: Mapping[str, Any] | None = None,
    config_name: str = "",
) -> dict[str, dict[str, dict]]:
    """Generates data, trains both streams, localizes the test split, prints and saves the mAP tables.

    Args:
      workdir: Work directory of the run (see the module docstring).
      synthetic, model, train, grid, localizer_config: The settings of each stage.
      batch_size: Videos per call of the composed graph.
      protocol: "activitynet", "th14kit" or "both".
      tiou_thresholds: The thresholds of the tables.
      config_record: The resolved config, recorded in the work directory (its dataset.dir is set here).
      config_name: The config's name or file.

    Returns:
      {protocol: {row name: evaluation result}}.
    """
    start = time.time()
    protocols = protocols_of(protocol)
    dataset_dir = os.path.join(workdir, "dataset")
    reuse_dataset = dataset_io.is_dataset_dir(dataset_dir)
    # Checks first: a refused run writes nothing.
    WorkDir(workdir).check_training_settings(config_record)
    if reuse_dataset and not synthetic.matches(dataset_io.read_dataset_info(dataset_dir)):
        made = dataset_io.read_dataset_info(dataset_dir)
        raise StpnError(f"{dataset_dir}: made with other synthetic settings (feature_dim={made.feature_dim}, "
                        f"{made.synthetic}) than asked ({synthetic}); use a new --workdir")
    if reuse_dataset:
        print(f"[demo] reusing dataset in {dataset_dir}", flush=True)
    else:
        print(f"[demo] writing the synthetic THUMOS14 dataset to {dataset_dir}", flush=True)
        synthetic_lib.write_dataset(dataset_dir, feature_dim=synthetic.feature_dim, seed=synthetic.seed,
                                    max_snippets=synthetic.max_snippets, num_shards=synthetic.num_shards)
    record = copy.deepcopy(dict(config_record or {}))
    record.setdefault("dataset", {})["dir"] = os.path.abspath(dataset_dir)
    work = WorkDir(workdir)
    runs.train_streams(workdir=workdir, dataset_dir=dataset_dir, model=model, train=train, config_record=record,
                       config_name=config_name, prefix="[demo]",
                       reused=f"model in {workdir}")

    print("[demo] localizing the test split", flush=True)
    serving = load_serving_model(workdir, grid=grid, localizer_config=localizer_config)
    two_stream, raw = runs.run_models(serving, dataset_dir, "test", batch_size=batch_size)
    raw_outputs.save_raw(os.path.join(workdir, "raw_test.npz"), raw, split="test",
                         ground_truth=dataset_io.ground_truth_path(dataset_dir))
    ground_truth = load_ground_truth(dataset_io.ground_truth_path(dataset_dir), "test")
    thresholds = list(tiou_thresholds) or None
    tables: dict[str, dict[str, dict]] = {p: {} for p in protocols}
    localizer = Localizer(localizer_config)
    for name, streams in ROWS:
        results = two_stream if len(streams) == 2 else predict.localize_raw(raw, localizer, streams=streams,
                                                                           batch_size=batch_size)
        write_results(os.path.join(workdir, f"detections_{'_'.join(streams)}.json"), results)
        source = f"{name} detections (detections_{'_'.join(streams)}.json)"
        for p in protocols:
            tables[p][name] = evaluate_detections(ground_truth, results, protocol=p, tiou_thresholds=thresholds,
                                                  source=source, log_warnings=False)
        # The warnings are about the detections, not the protocol: each once, naming the stream.
        for warning in dict.fromkeys(w for p in protocols for w in tables[p][name]["warnings"]):
            print(f"[demo] warning: {warning}", flush=True)
    text = format_protocol_tables(tables, next(iter(tables.values()))["RGB"]["tiou_thresholds"])
    print("\n" + text + "\n")
    atomic_write_text(os.path.join(workdir, "results.txt"), text + "\n")
    atomic_write_json(os.path.join(workdir, "results.json"), tables)
    work.write_config("demo", record)
    print(f"[demo] done in {time.time() - start:.0f} s; outputs in {workdir} (tables: results.txt, results.json)")
    return tables

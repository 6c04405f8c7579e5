"""Seed studies: train both streams per seed, localize with the default and tuned settings, aggregate.

Layout of a study directory S:
    S/seed_<n>/          a training work directory per seed (resumable: trained streams are reused,
                         an interrupted training resumes; raw test outputs are saved once, raw_test.npz)
    S/study.json         per seed and setting: mAP per tIoU, both protocols; aggregates (mean, std with
                         ddof 0 (population), min, max) per tIoU and of the average
    S/study.txt          the tables
The seeds run one after another (one heavy job at a time).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stpn_tf.training import trainer as train_lib
from stpn_tf.artifacts.shards import list_shards
from stpn_tf.data.grid import GridConfig
from stpn_tf.core.errors import StpnError
from stpn_tf.core.tables import format_study_tables
from stpn_tf.evaluation.evaluate import PROTOCOLS
from stpn_tf.tuning.sweep import Sweeper, batch_size_for, describe, objective_value, protocols_text
from stpn_tf.artifacts import dataset_dir as dataset_io
from stpn_tf.core.atomic import atomic_write_json, atomic_write_text
from stpn_tf.artifacts.ground_truth import load_ground_truth
from stpn_tf.model.stpn import ModelConfig
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.workflows import runs


def aggregate(values: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """mean, std (population, ddof 0), min, max over seeds (axis 0) of [seeds, T] values."""
    a = np.asarray(values, np.float64)
    return {"mean": a.mean(0).tolist(), "std": a.std(0).tolist(), "min": a.min(0).tolist(), "max": a.max(0).tolist()}


def run_study(*, study_dir: str, dataset_dir: str, seeds: Sequence[int], model: ModelConfig,
              train: train_lib.TrainConfig, grid: GridConfig, settings: Mapping[str, LocalizerConfig],
              train_split: str = "train", test_split: str = "test", tiou_thresholds: Sequence[float] | None = None,
              batch_size: int = 16, config_record: Mapping[str, Any] | None = None, config_name: str = "",
              unknown_labels_as_fp: bool = False, grids: Mapping[str, GridConfig] | None = None,
              objective: str = "min") -> dict[str, Any]:
    """Runs (or resumes) the study; returns what study.json holds.

    Args:
      settings: {name: localization settings}, e.g. {"paper default": ..., "tuned": ...}.
      grids: {name: where the models look} for settings that do not use `grid` (a tuned config may have
        chosen localize.all_snippets); the models run once per distinct grid.
      objective: The tuning objective (stpn_tf.tuning.sweep.OBJECTIVES) quoted per seed and aggregated
        beside both protocols, as `stpn tune` ranks settings.
    """
    grid_of = {name: (grids or {}).get(name, grid) for name in settings}
    if not seeds:
        raise StpnError("study: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise StpnError(f"study: seeds repeat: {list(seeds)}")
    info = dataset_io.read_dataset_info(dataset_dir)
    truth = load_ground_truth(dataset_io.ground_truth_path(dataset_dir), test_split)
    list_shards(dataset_dir, test_split)  # a split without shards fails here, before any training
    record = dict(config_record or {})
    per_seed: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        workdir = os.path.join(study_dir, f"seed_{seed}")
        runs.train_streams(workdir=workdir, dataset_dir=dataset_dir, model=model,
                           train=dataclasses.replace(train, seed=int(seed)), train_split=train_split,
                           config_record=record, config_name=config_name, prefix=f"[study] seed {seed}:")
        sweepers: dict[GridConfig, Sweeper] = {}
        for where in dict.fromkeys(grid_of.values()):
            raw, _ = runs.cached_raw_outputs(
                runs.raw_file(workdir, test_split, where, default_grid=grid), workdir=workdir,
                dataset_dir=dataset_dir, split=test_split, grid=where, feature_dim=info.feature_dim,
                batch_size=batch_size, announce=f"[study] seed {seed}: running the models on the {test_split} split"
                + (" (every snippet)" if where.all_snippets else ""))
            sweepers[where] = Sweeper(raw, truth, protocols=PROTOCOLS, tiou_thresholds=tiou_thresholds,
                                      batch_size=batch_size_for(raw),
                                      unknown_labels_as_fp=unknown_labels_as_fp)
        per_seed[str(seed)] = {name: sweepers[grid_of[name]].score(config)["protocols"]
                               for name, config in settings.items()}
        summary = "; ".join(f"{name}: objective ({objective}) {100 * objective_value({'protocols': r}, objective):.2f}, "
                            f"{protocols_text({'protocols': r})}" for name, r in per_seed[str(seed)].items())
        print(f"[study] seed {seed}: average mAP {summary}", flush=True)
    first = next(iter(per_seed.values()))
    result: dict[str, Any] = {"seeds": list(seeds), "test_split": test_split,
                              "settings": {name: {"config": c.to_dict(), "setting": describe(c),
                                                  "all_snippets": grid_of[name].all_snippets}
                                           for name, c in settings.items()},
                              "per_seed": per_seed, "aggregate": {}, "objective": objective,
                              "objective_average": {name: aggregate([[objective_value({"protocols": per_seed[str(s)][name]},
                                                                                      objective)] for s in seeds])
                                                    for name in settings}}
    for name in settings:
        result["aggregate"][name] = {}
        for protocol in PROTOCOLS:
            rows = [per_seed[str(s)][name][protocol] for s in seeds]
            result["aggregate"][name][protocol] = {
                "tiou_thresholds": first[name][protocol]["tiou_thresholds"],
                "mAP": aggregate([r["mAP"] for r in rows]),
                "average_mAP": {k: v[0] for k, v in aggregate([[r["average_mAP"]] for r in rows]).items()}}
    text = format_study(result)
    atomic_write_json(os.path.join(study_dir, "study.json"), result, make_parents=True)
    atomic_write_text(os.path.join(study_dir, "study.txt"), text + "\n")
    print("\n" + text)
    return result


def format_study(result: Mapping[str, Any]) -> str:
    """Tables: per protocol and setting, mean, std, min and max mAP (%) per tIoU and of the average."""
    lines = [f"seeds {', '.join(map(str, result['seeds']))} ({len(result['seeds'])} runs); std over seeds, ddof 0"]
    return "\n".join(lines + format_study_tables(result["aggregate"]))

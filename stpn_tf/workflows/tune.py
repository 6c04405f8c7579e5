"""`stpn tune`: choose localization settings on a split other than the test split, report test mAP.

The models run once per split and grid choice (raw outputs); the search then only re-localizes
(stpn_tf.tuning.sweep). Tuning reads the tuning split's temporal annotations: THUMOS14's training
(validation) videos carry them, so the test split stays unseen. Tuning on the test split is refused unless
asked for by name (`allow_tuning_on_test`), and every output then says so.

Outputs: a config file with the chosen settings (`config_file`) and <workdir>/tune.json (every setting
tried with its mAP on the tuning split; test mAP of the paper default and of the chosen settings).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from stpn_tf.artifacts.annotations import VideoRecord
from stpn_tf.artifacts.dataset_dir import ground_truth_path
from stpn_tf.artifacts.ground_truth import load_ground_truth
from stpn_tf.artifacts.workdir import WorkDir
from stpn_tf.core.atomic import atomic_write_json, atomic_write_text
from stpn_tf.core.errors import StpnError
from stpn_tf.core.tables import format_setting_tables
from stpn_tf.data.grid import GridConfig
from stpn_tf.inference.runner import load_serving_model
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.tuning import sweep
from stpn_tf.workflows import runs

# Where the models look (config.localize.all_snippets): not a Localizer setting but a choice of the raw outputs,
# so the search runs once per value listed in the space under this key and keeps the best.
GRID_KEY = "all_snippets"
KEY_ORDER, ordered_keys = sweep.KEY_ORDER, sweep.ordered_keys


def search(job: dict) -> dict:
    """One grid choice: the models on the tuning and test splits, then `sweep.search_raw` (the coordinate
    search on the tuning split, none when job["space"] is empty; test scores of the paper default and of the
    chosen settings). The models and their raw outputs are dropped before returning, so the next grid
    choice starts from the memory this one started from.
    """
    grid, base = job["grid"], job["base"]
    where = "every snippet" if grid.all_snippets else f"the {grid.length}-position grid"
    model = load_serving_model(job["workdir"], grid=grid, localizer_config=base, feature_dim=job["feature_dim"])
    raw = {}
    for split in dict.fromkeys((job["split"], job["test_split"])):
        print(f"running the models on the {split} split ({where}) ...", flush=True)
        # Raw outputs only: the search localizes them itself.
        _, raw[split] = runs.run_models(model, job["dataset_dir"], split, batch_size=job["predict_batch"],
                                        detections=False)
    del model
    result = sweep.search_raw(raw[job["split"]], job["tune_truth"], raw[job["test_split"]], job["test_truth"],
                              base=base, space=job["space"], rounds=job["rounds"], joint=job["joint"],
                              objective=job["objective"], tiou_thresholds=job["thresholds"], batch_size=job["batch"],
                              unknown_labels_as_fp=job["unknown_labels_as_fp"], on_test=job["on_test"],
                              out=sys.stdout)
    raw.clear()
    gc.collect()
    return result


def _literal(value: Any) -> str:
    """Python source for a config value; infinite floats (min_score's -inf) as float('-inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    return repr(value)


def config_file(*, module: str, shipped: Mapping[str, Any], current: Mapping[str, Any], chosen: LocalizerConfig,
                all_snippets: bool, split: str, on_test: bool, test_rows: Mapping[str, Mapping[str, Any]],
                objective: str = "min") -> str:
    """A config file: the shipped config `module` it starts from, every value of the run's config that
    differs from it, and the chosen localization settings.

    Args:
      module: The shipped config the file imports (stpn_tf.configs).
      shipped: Its values, {"section.key": value}.
      current: The tuning run's config values, {"section.key": value}.
      chosen, all_snippets: The chosen settings.
      split, on_test: Where they were chosen.
      test_rows: {name: Sweeper score} on the test split, quoted in the docstring (both protocols).
      objective: What the search maximised (stpn_tf.tuning.sweep.OBJECTIVES).
    """
    values = dict(chosen.to_dict(), max_classes_per_video=chosen.max_classes_per_video or 0, all_snippets=all_snippets)
    localize = {f"localize.{k}": (tuple(v) if isinstance(v, list) else v) for k, v in values.items()
                if f"localize.{k}" in current}
    lines = [f'"""Localization settings chosen by `stpn tune` on the {split!r} split'
             + (" -- THE TEST SPLIT: its test mAP below is optimistic" if on_test else "") + ".",
             "",
             f"Tuning used that split's temporal annotations; objective {objective!r}. Test mAP (average over tIoU):"]
    for name, row in test_rows.items():
        lines.append(f"  {name}: {sweep.protocols_text(row)}")
    lines += ["",
              "Use it with: stpn localize --workdir=W --config=THIS_FILE (or stpn export ... --config=THIS_FILE).",
              '"""', "", f"from stpn_tf.configs import {module} as base", "", "", "def get_config():",
              "    config = base.get_config()",
              "    # Values of the tuned run's config that differ from the shipped one:"]
    for key, value in current.items():
        if key not in localize and shipped.get(key) != value:
            lines.append(f"    config.{key} = {_literal(value)}")
    lines.append("    # The chosen localization settings:")
    for key, value in localize.items():
        lines.append(f"    config.{key} = {_literal(value)}")
    lines += ["    return config", ""]
    return "\n".join(lines)


def choose_grid(found: Mapping[bool, Mapping[str, Any]], default_grid: bool, objective: str) -> bool:
    """The grid choice (all_snippets value) whose search wins: the best objective on the tuning split among
    the eligible ones, ties to the earlier in `found`. Eligible: the chosen row scores at least the paper
    default on the default grid ("tuning_default") under every protocol the objective covers (the default
    grid's own search never falls below its start, so it always is).

    Args:
      found: {all_snippets: `sweep.search_raw` result with "tuning" (the chosen row) and "tuning_default"}.
      default_grid: The config's all_snippets.
      objective: stpn_tf.tuning.sweep.OBJECTIVES.
    """
    floor = found[default_grid]["tuning_default"]["protocols"]
    covered = sweep.objective_protocols(objective)
    eligible = [g for g in found if all(found[g]["tuning"]["protocols"][p]["average_mAP"] >= floor[p]["average_mAP"]
                                        for p in covered)]
    order = list(found)
    return max(eligible, key=lambda g: (found[g]["tuning"]["objective"], -order.index(g)))


def _tuning_truth(truth_path: str, split: str, train_split: str) -> list[VideoRecord]:
    try:
        truth = load_ground_truth(truth_path, split)
    except StpnError:
        if split != train_split:
            raise
        # THUMOS14's training videos with temporal annotations are its validation set.
        truth = load_ground_truth(truth_path, "validation")
        print(f"stpn tune: the ground truth of the {split!r} split is its 'validation' subset", flush=True)
    if not any(r.segments for r in truth):
        raise StpnError(f"{truth_path}: the {split!r} split has no temporal annotations to tune on")
    return truth


def run_tune(*, workdir: str, dataset_dir: str, split: str, split_named: bool, train_split: str, test_split: str,
             allow_tuning_on_test: bool, base: LocalizerConfig, grid: GridConfig, space: Mapping[str, Sequence[Any]],
             grids: Sequence[bool], rounds: int, joint: Sequence[str], tiou_thresholds: Sequence[float] | None,
             tune_batch_size: int, batch_size: int, unknown_labels_as_fp: bool, out: str | None, objective: str,
             shipped_configs: Mapping[str, Mapping[str, Any]], config_values: Mapping[str, Any]) -> dict[str, Any]:
    """Runs the search and writes the config file and <workdir>/tune.json; returns what tune.json holds.

    Args:
      workdir: Training work directory, both streams trained.
      dataset_dir: The dataset the streams were trained on.
      split: Split to tune on.
      split_named: `split` was asked for by name (else the dataset's shards are checked on `test_split`
        first, as a work directory's localization would read them).
      train_split, test_split: The dataset's splits (the training split's ground truth may be its
        'validation' subset, as THUMOS14's).
      allow_tuning_on_test: Tune on `test_split` if `split` is it (outputs are labelled).
      base: The settings the search starts from (the paper default), scored on the test split too.
      grid: The test grid; its all_snippets is replaced by each value of `grids`.
      space: {setting: values}, in the order a round visits them (`ordered_keys`).
      grids: all_snippets values, one search each, one after another in this process.
      objective: What the search maximises (stpn_tf.tuning.sweep.OBJECTIVES).
      rounds, joint: As in stpn_tf.tuning.sweep.tune.
      tiou_thresholds: Evaluation thresholds.
      tune_batch_size: Videos per Localizer call of the search (sweep.sweep_batch_size; 0: from the data).
      batch_size: Videos per call of the models.
      unknown_labels_as_fp: As in evaluate_detections.
      out: The config file to write (default <workdir>/tuned_config.py).
      shipped_configs: {shipped config name: its values as {"section.key": value}}.
      config_values: The run's config values, {"section.key": value}.
    """
    work = WorkDir(workdir).require()
    record = work.read_record()
    on_test = split == test_split
    if on_test and not allow_tuning_on_test:
        raise StpnError(f"refusing to tune on the test split {split!r}: settings chosen there overstate test mAP; "
                        f"tune on {train_split!r} (the default), or pass --allow_tuning_on_test to do it "
                        "anyway (outputs are then labelled)")
    out = out or work.file("tuned_config.py")
    checked = runs.dataset_split(dataset_dir, split if split_named else test_split, classes=work.classes(),
                                 feature_dim=(record.feature_dim if record else None) or None, source=workdir)
    truth_path = ground_truth_path(dataset_dir)
    tune_truth = _tuning_truth(truth_path, split, train_split)
    test_truth = load_ground_truth(truth_path, test_split)
    default_grid = grid.all_snippets
    label = "TUNED ON THE TEST SPLIT (optimistic)" if on_test else f"tuned on {split!r}"
    print(f"stpn tune: choosing localization settings on the {split!r} split ({len(tune_truth)} videos) using its "
          f"temporal annotations; {label}", flush=True)

    def job(all_snippets: bool) -> dict:
        return dict(workdir=workdir, grid=dataclasses.replace(grid, all_snippets=all_snippets), base=base,
                    feature_dim=checked.feature_dim, dataset_dir=dataset_dir, split=split, test_split=test_split,
                    tune_truth=tune_truth, test_truth=test_truth, thresholds=tiou_thresholds, batch=tune_batch_size,
                    predict_batch=batch_size, unknown_labels_as_fp=unknown_labels_as_fp, space=dict(space),
                    rounds=rounds, joint=tuple(joint), on_test=on_test, objective=objective)

    grids = tuple(grids)
    found = {}
    for all_snippets in grids:
        if len(grids) > 1:
            print(f"\nsearch {grids.index(all_snippets) + 1} of {len(grids)}: localize.{GRID_KEY}={all_snippets}",
                  flush=True)
        found[all_snippets] = search(job(all_snippets))
    history = [dict(row, all_snippets=g) for g in grids for row in found[g]["history"]]
    # The best objective on the tuning split; ties keep the earlier grid choice (by default the paper's). A
    # grid choice other than the default's must also not fall below the paper default (the default grid's
    # start) under any protocol the objective covers.
    if default_grid not in found:
        found[default_grid] = search(dict(job(default_grid), space={}))
        found[default_grid].update(chosen=base.to_dict(), tuning=found[default_grid]["tuning_default"],
                                   test_chosen=found[default_grid]["test_default"])
    floor = found[default_grid]["tuning_default"]
    covered = sweep.objective_protocols(objective)
    chosen_grid = choose_grid(found, default_grid, objective)
    chosen = LocalizerConfig.from_dict(found[chosen_grid]["chosen"])
    compiles = sum(found[g]["compiles"] for g in found)
    test_rows = {"paper default": found[default_grid]["test_default"], label: found[chosen_grid]["test_chosen"]}
    chosen_setting = sweep.describe(chosen) + (f" {GRID_KEY}={chosen_grid}" if chosen_grid != default_grid or
                                               len(grids) > 1 else "")
    tuning_row = found[chosen_grid]["tuning"]
    print(f"\nchosen: {chosen_setting}\n  on {split!r}: objective ({objective}) {100 * tuning_row['objective']:.2f}; "
          f"{sweep.protocols_text(tuning_row)} (paper default: {sweep.protocols_text(floor)})")
    print(f"localization compiles (XLA) of the search: {compiles}\n")
    print(format_setting_tables(test_rows, f"on {test_split!r}"))
    module = record.config_name if record else "thumos14"
    module = module if module in shipped_configs else "thumos14"
    atomic_write_text(out, config_file(module=module, shipped=shipped_configs[module], current=config_values,
                                       chosen=chosen, all_snippets=chosen_grid, split=split, on_test=on_test,
                                       test_rows=test_rows, objective=objective), make_parents=True)
    report = {"tuned_on": split, "tuned_on_test_split": on_test, "test_split": test_split,
              "uses_temporal_annotations_of": split, "space": {k: list(v) for k, v in space.items()},
              GRID_KEY: list(grids), "rounds": int(rounds), "joint": list(joint), "chosen": chosen.to_dict(),
              "chosen_all_snippets": chosen_grid, "chosen_setting": chosen_setting, "default": base.to_dict(),
              "objective": objective, "objective_protocols": list(covered), "compiles": compiles,
              "tuning": {"paper_default": floor, "tuned": tuning_row},
              "test": {"paper_default": test_rows["paper default"], "tuned": test_rows[label]},
              "history": history}
    atomic_write_json(work.file("tune.json"), report)
    print(f"wrote {out} (use: stpn localize --workdir={workdir} --config={out}) and {work.file('tune.json')}")
    if LocalizerConfig.from_dict(chosen.to_dict()) != chosen:
        raise StpnError("internal: the chosen settings do not round-trip")  # pragma: no cover
    return report

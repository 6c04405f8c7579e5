"""`stpn tune`: choose localization settings on a split other than the test split, report test mAP.

The models run once per split (raw outputs); the search then only re-localizes (stpn_tf.tuning.sweep).
Tuning reads the tuning split's temporal annotations: THUMOS14's training (validation) videos carry them,
so the test split stays unseen. Tuning on the test split is refused unless asked for by name
(--allow_tuning_on_test), and every output then says so.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags

from stpn_tf.cli.common import Command, Parsed, define_workdir, require
from stpn_tf.core.errors import StpnError


# Where the models look (config.localize.all_snippets): not a Localizer setting but a choice of the raw outputs,
# so the search runs once per value listed in config.tune.space.all_snippets and keeps the best.
GRID_KEY = "all_snippets"
# The order a round visits the keys of config.tune.space (ConfigDict keys come back sorted by name).
KEY_ORDER = ("proposals", "scoring", "nms", "proposal_streams", "class_threshold", "tcam_threshold", "alpha", "oic_margin", "oic_gamma",
             "nms_threshold", "soft_nms_sigma")


def define(fv: flags.FlagValues) -> None:
    define_workdir(fv, "training work directory (both streams trained)")
    flags.DEFINE_string("split", None, "split to tune on (default config.tune.split)", flag_values=fv)
    flags.DEFINE_bool("allow_tuning_on_test", False, "allow --split to be the test split (outputs are then "
                      "labelled as tuned on the test split, an optimistic figure)", flag_values=fv)
    flags.DEFINE_string("out", None, "config file to write (default <workdir>/tuned_config.py)", flag_values=fv)
    flags.DEFINE_bool("unknown_labels_as_fp", False, "count predicted labels absent from a split's ground truth as "
                      "false positives (instead of an error)", flag_values=fv)


def _raw_outputs(model, dataset_dir: str, split: str, where: str, batch_size: int):
    from stpn_tf.inference import predict
    from stpn_tf.data import tfrecord

    shards = tfrecord.list_shards(dataset_dir, split)
    print(f"running the models on the {split} split ({where}) ...", flush=True)
    _, raw = predict.predict_records(model, shards, batch_size=batch_size)
    return raw


def _search(job: dict) -> dict:
    """One grid choice: the models on the tuning and test splits, the coordinate search on the tuning split
    (none when job["space"] is empty), and the test scores of the paper default and of the chosen settings.

    Module level and picklable both ways, so that it can run in a process of its own.
    """
    import tensorflow as tf

    from stpn_tf.tuning.sweep import Sweeper, batch_size_for, tune
    from stpn_tf.inference.runner import load_serving_model

    tf.get_logger().setLevel("ERROR")  # a search compiles one function per structure; TF warns about that
    grid, base = job["grid"], job["base"]
    where = "every snippet" if grid.all_snippets else f"the {grid.length}-position grid"
    model = load_serving_model(job["workdir"], grid=grid, localizer_config=base, feature_dim=job["feature_dim"])
    raw = {split: _raw_outputs(model, job["dataset_dir"], split, where, job["predict_batch"])
           for split in dict.fromkeys((job["split"], job["test_split"]))}
    options = dict(protocols=("activitynet", "th14kit"), tiou_thresholds=job["thresholds"],
                   batch_size=batch_size_for(raw[job["test_split"]], job["batch"]),
                   unknown_labels_as_fp=job["unknown_labels_as_fp"])
    tester = Sweeper(raw[job["test_split"]], job["test_truth"], **options)
    result = {"test_default": tester.score(base)}
    if job["space"]:
        sweeper = tester if job["on_test"] else Sweeper(raw[job["split"]], job["tune_truth"], **options)
        chosen, history = tune(sweeper, base, job["space"], rounds=job["rounds"], joint=job["joint"],
                               out=sys.stdout)
        result.update(chosen=chosen.to_dict(), history=history, tuning_mAP=sweeper.score(chosen)["average_mAP"],
                      test_chosen=tester.score(chosen))
    return result


def _table(label: str, rows: dict) -> str:
    lines = []
    for protocol, title in (("activitynet", "ActivityNet protocol"), ("th14kit", "THUMOS14 toolkit")):
        thresholds = next(iter(rows.values()))["protocols"][protocol]["tiou_thresholds"]
        head = f"mAP (%) {title} {label}"
        lines.append(f"{head:<44}" + "".join(f"{t:6.2f}" for t in thresholds) + "     avg")
        for name, row in rows.items():
            r = row["protocols"][protocol]
            lines.append(f"{name:<44}" + "".join(f"{100 * x:6.1f}" for x in r["mAP"]) + f"{100 * r['average_mAP']:8.2f}")
        lines.append("")
    return "\n".join(lines)


def _config_file(cfg, base_name: str, chosen, all_snippets: bool, split: str, on_test: bool, test_rows: dict) -> str:
    """A config file: the shipped config it started from, every value this run's config changed, and the
    chosen localization settings."""
    from stpn_tf import configs

    module = base_name if base_name in configs.NAMES else "thumos14"
    shipped = configs.flat_keys(configs.load_config(module))
    current = configs.flat_keys(cfg)
    values = dict(chosen.to_dict(), max_classes_per_video=chosen.max_classes_per_video or 0, all_snippets=all_snippets)
    localize = {f"localize.{k}": (tuple(v) if isinstance(v, list) else v) for k, v in values.items()
                if f"localize.{k}" in current}
    lines = [f'"""Localization settings chosen by `stpn tune` on the {split!r} split'
             + (" -- THE TEST SPLIT: its test mAP below is optimistic" if on_test else "") + ".",
             "",
             "Tuning used that split's temporal annotations. Test mAP (ActivityNet protocol, average over tIoU):"]
    for name, row in test_rows.items():
        lines.append(f"  {name}: {100 * row['protocols']['activitynet']['average_mAP']:.2f}")
    lines += ["",
              "Use it with: stpn localize --workdir=W --config=THIS_FILE (or stpn export ... --config=THIS_FILE).",
              '"""', "", f"from stpn_tf.configs import {module} as base", "", "", "def get_config():",
              "    config = base.get_config()", "    # Values of the tuned run's config that differ from the shipped one:"]
    for key, value in current.items():
        if key not in localize and shipped.get(key) != value:
            lines.append(f"    config.{key} = {value!r}")
    lines.append("    # The chosen localization settings:")
    for key, value in localize.items():
        lines.append(f"    config.{key} = {value!r}")
    lines += ["    return config", ""]
    return "\n".join(lines)


def run(p: Parsed) -> int:
    from stpn_tf.cli import settings
    from stpn_tf.cli.localize import _dataset
    from stpn_tf.tuning.sweep import describe
    from stpn_tf.core.atomic import atomic_write_json, atomic_write_text
    from stpn_tf.artifacts.ground_truth import load_ground_truth
    from stpn_tf.artifacts.workdir import WorkDir
    from stpn_tf.localize.localizer import LocalizerConfig

    require(p.flags, "workdir")
    cfg = p.config
    work = WorkDir(p.workdir).require()
    record = work.read_record()
    test_split = cfg.dataset.test_split
    split = p.split or cfg.tune.split
    on_test = split == test_split
    if on_test and not p.allow_tuning_on_test:
        raise StpnError(f"refusing to tune on the test split {split!r}: settings chosen there overstate test mAP; "
                        f"tune on {cfg.dataset.train_split!r} (the default), or pass --allow_tuning_on_test to do it "
                        "anyway (outputs are then labelled)")
    out = p.out or work.file("tuned_config.py")
    from stpn_tf.cli.localize import _dataset_dim

    feature_dim = (record.feature_dim if record else None) or _dataset_dim(cfg)
    dataset_dir, _, _, _ = _dataset(p, work.classes(), feature_dim, p.workdir)
    truth_path = os.path.join(dataset_dir, "ground_truth.json")
    try:
        tune_truth = load_ground_truth(truth_path, split)
    except StpnError:
        if split != cfg.dataset.train_split:
            raise
        # THUMOS14's training videos with temporal annotations are its validation set.
        tune_truth = load_ground_truth(truth_path, "validation")
        print(f"stpn tune: the ground truth of the {split!r} split is its 'validation' subset", flush=True)
    if not any(r.segments for r in tune_truth):
        raise StpnError(f"{truth_path}: the {split!r} split has no temporal annotations to tune on")
    test_truth = load_ground_truth(truth_path, test_split)
    base = settings.localizer_config(cfg)
    keys = sorted(cfg.tune.space.keys(), key=lambda k: (KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))
    space = {key: tuple(cfg.tune.space[key]) for key in keys if key != GRID_KEY}
    if not space:
        raise StpnError("the tuning space is empty: config.tune.space needs a localize setting besides all_snippets")
    default_grid = bool(cfg.localize.all_snippets)
    grids = tuple(dict.fromkeys(bool(v) for v in cfg.tune.space.get(GRID_KEY, (default_grid,))))
    if not grids:
        raise StpnError(f"config.tune.space.{GRID_KEY} is empty: list False (the grid), True (every snippet) or both")
    label = "TUNED ON THE TEST SPLIT (optimistic)" if on_test else f"tuned on {split!r}"
    print(f"stpn tune: choosing localization settings on the {split!r} split ({len(tune_truth)} videos) using its "
          f"temporal annotations; {label}", flush=True)
    thresholds = settings.evaluation_thresholds(cfg)

    def job(all_snippets: bool) -> dict:
        return dict(workdir=p.workdir, grid=dataclasses.replace(settings.grid_config(cfg), all_snippets=all_snippets),
                    base=base, feature_dim=feature_dim, dataset_dir=dataset_dir, split=split, test_split=test_split,
                    tune_truth=tune_truth, test_truth=test_truth, thresholds=thresholds,
                    batch=int(cfg.tune.batch_size),
                    predict_batch=int(cfg.localize.batch_size), unknown_labels_as_fp=p.unknown_labels_as_fp,
                    space=space, rounds=int(cfg.tune.rounds), joint=tuple(cfg.tune.joint), on_test=on_test)

    found = {}
    for all_snippets in grids:
        if len(grids) == 1:
            found[all_snippets] = _search(job(all_snippets))
            continue
        print(f"\nsearch {grids.index(all_snippets) + 1} of {len(grids)}: localize.{GRID_KEY}={all_snippets} "
              "(in a process of its own)", flush=True)
        # One process per search, one after another: each starts with a fresh TensorFlow and frees its
        # memory (compiled functions, all-snippet raw outputs) when done. In one process, a search over
        # every snippet after one over the grid ended in a segfault in XLA's compiled code on this machine.
        import concurrent.futures
        import multiprocessing

        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            found[all_snippets] = pool.submit(_search, job(all_snippets)).result()
    history = [dict(row, all_snippets=g) for g in grids for row in found[g]["history"]]
    # The best on the tuning split; ties keep the earlier grid choice (by default the paper's).
    chosen_grid = max(grids, key=lambda g: (found[g]["tuning_mAP"], -grids.index(g)))
    chosen = LocalizerConfig.from_dict(found[chosen_grid]["chosen"])
    if default_grid not in found:
        found[default_grid] = _search(dict(job(default_grid), space={}))
    test_rows = {"paper default": found[default_grid]["test_default"], label: found[chosen_grid]["test_chosen"]}
    chosen_setting = describe(chosen) + (f" {GRID_KEY}={chosen_grid}" if chosen_grid != default_grid or
                                         len(grids) > 1 else "")
    print(f"\nchosen: {chosen_setting}\n")
    print(_table(f"on {test_split!r}", test_rows))
    cfg.dataset.dir = dataset_dir
    atomic_write_text(out, _config_file(cfg, record.config_name if record else "thumos14", chosen, chosen_grid, split, on_test, test_rows), make_parents=True)
    report = {"tuned_on": split, "tuned_on_test_split": on_test, "test_split": test_split,
              "uses_temporal_annotations_of": split, "space": {k: list(v) for k, v in space.items()}, GRID_KEY: list(grids),
              "rounds": int(cfg.tune.rounds), "joint": list(cfg.tune.joint), "chosen": chosen.to_dict(), "chosen_all_snippets": chosen_grid, "chosen_setting": chosen_setting,
              "default": base.to_dict(), "test": {"paper_default": test_rows["paper default"], "tuned": test_rows[label]},
              "history": history}
    atomic_write_json(work.file("tune.json"), report)
    print(f"wrote {out} (use: stpn localize --workdir={p.workdir} --config={out}) and {work.file('tune.json')}")
    if LocalizerConfig.from_dict(chosen.to_dict()) != chosen:
        raise StpnError("internal: the chosen settings do not round-trip")  # pragma: no cover
    return 0


COMMAND = Command(
    name="tune", purpose="choose localization settings on the training split, report test mAP beside the paper's",
    usage="stpn tune --workdir=W [--split=train] [--out=W/tuned_config.py] [--allow_tuning_on_test]",
    define=define, run=run, config_sections=("dataset", "localize", "tune", "evaluate"),
    details="Writes a config file with the chosen config.localize values and <workdir>/tune.json (every setting\n"
            "tried, with its mAP on the tuning split; test mAP of the paper default and of the chosen settings).\n"
            "The search reads the tuning split's temporal annotations (THUMOS14: the validation videos).\n"
            "config.tune.space.all_snippets=(False, True) runs the search once on the paper's grid and once on\n"
            "every snippet (the models run on both splits for each) and keeps the better on the tuning split.")
